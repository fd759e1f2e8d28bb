//! Workers over a network: the dial-in knock, TCP keepalive, and the stream transport.

pub(crate) mod keepalive;
pub(crate) mod knock;
pub(crate) mod stream_transport;
