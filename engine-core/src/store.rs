//! The [`SharedStore`] trait: where shared values live for workers that cannot borrow them.

use crate::error::Result;
use std::fmt;
use std::sync::Arc;

/// The content address of a stored value: a hash of its bytes, as 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ShareKey(String);

impl ShareKey {
    /// The key of these bytes: FNV-1a 128-bit of the content, so equal values share one entry.
    ///
    /// ```
    /// use engine_core::ShareKey;
    /// assert_eq!(ShareKey::of(b"abc"), ShareKey::of(b"abc"));
    /// assert_ne!(ShareKey::of(b"abc"), ShareKey::of(b"abd"));
    /// assert_eq!(ShareKey::of(b"").as_str().len(), 32);
    /// ```
    pub fn of(bytes: &[u8]) -> Self {
        const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
        const PRIME: u128 = 0x0000000001000000000000000000013B;
        let mut h = OFFSET;
        for &b in bytes {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
        // Mix the length in, so that prefixes never collide trivially.
        h ^= bytes.len() as u128;
        h = h.wrapping_mul(PRIME);
        ShareKey(format!("{h:032x}"))
    }

    /// The key as text (safe as a file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareKey({})", self.0)
    }
}

impl fmt::Display for ShareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read-only bytes of a stored value: owned, or mapped from a file by stores that can.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where the driver puts shared values once and workers fetch them.
///
/// Stores are content-addressed: putting the same bytes twice stores them once and returns the
/// same key, and putting new bytes always returns a new key (so a second share under the same
/// name never serves the old data, a bug of the seed). Implementations live in the
/// `share-store` crate; a third-party one can be passed to a backend.
pub trait SharedStore: Send + Sync {
    /// Stores `bytes` (once per content) and returns their key.
    fn put(&self, bytes: &[u8]) -> Result<ShareKey>;
    /// The bytes stored under `key`.
    fn get(&self, key: &ShareKey) -> Result<SharedBytes>;
    /// Whether `key` is stored.
    fn contains(&self, key: &ShareKey) -> bool;
    /// Number of distinct values stored.
    fn len(&self) -> usize;
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes everything this store holds (files included). Also done on drop by stores that
    /// own files.
    fn clear(&self) -> Result<()>;
}
