#![cfg(feature = "conformance")]
