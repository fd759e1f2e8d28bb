//! The [`SharedStore`] trait: where shared values live for workers that cannot borrow them.

use crate::error::Result;
use std::fmt;
use std::io;
use std::sync::Arc;

/// The content address of a stored value: a hash of its bytes, as 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ShareKey(String);

impl ShareKey {
    /// The key of these bytes: a 128-bit hash of the content (XXH3-128, at memory speed), so
    /// equal values share one entry and a changed value gets a new key. Not cryptographic: the
    /// store trusts its own driver.
    ///
    /// ```
    /// use adparallelengine_core::ShareKey;
    /// assert_eq!(ShareKey::of(b"abc"), ShareKey::of(b"abc"));
    /// assert_ne!(ShareKey::of(b"abc"), ShareKey::of(b"abd"));
    /// assert_ne!(ShareKey::of(b""), ShareKey::of(b"\0"));
    /// assert_eq!(ShareKey::of(b"").as_str().len(), 32);
    /// ```
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = KeyHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The key as text (safe as a file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key written as [`ShareKey::as_str`] gives it (32 lowercase hex digits), or `None`.
    ///
    /// ```
    /// use adparallelengine_core::ShareKey;
    /// let k = ShareKey::of(b"abc");
    /// assert_eq!(ShareKey::parse(k.as_str()), Some(k));
    /// assert_eq!(ShareKey::parse("../etc/passwd"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| ShareKey(text.to_string()))
    }
}

/// [`ShareKey::of`] computed over bytes given piece by piece, for stores that hash a value as
/// it is written (see [`SharedStore::put_with`]): however the bytes are cut, the key is the
/// one `ShareKey::of` gives for all of them at once.
///
/// ```
/// use adparallelengine_core::{KeyHasher, ShareKey};
/// let mut h = KeyHasher::new();
/// h.update(b"big ");
/// h.update(b"table");
/// assert_eq!(h.finish(), ShareKey::of(b"big table"));
/// ```
#[derive(Clone)]
pub struct KeyHasher {
    state: xxhash_rust::xxh3::Xxh3,
    len: u64,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::new()
    }
}

impl KeyHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        KeyHasher { state: xxhash_rust::xxh3::Xxh3::new(), len: 0 }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes the next `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.state.update(bytes);
    }

    /// The key of every byte given to [`update`](Self::update).
    pub fn finish(&self) -> ShareKey {
        ShareKey(format!("{:032x}", self.state.digest128()))
    }
}

/// A 64-bit check of `parts` one after the other (XXH3), for records that must detect a torn
/// or damaged write (the journal's).
pub(crate) fn check64(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
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
/// name never serves the old data, a bug of the Python original). Implementations live in the
/// `share-store` crate; a third-party one can be passed to a backend.
pub trait SharedStore: Send + Sync {
    /// Stores `bytes` (once per content) and returns their key.
    fn put(&self, bytes: &[u8]) -> Result<ShareKey>;
    /// Stores the bytes that `write` writes to the sink it is given, and returns their key:
    /// the same key and the same stored value as [`put`](Self::put) of those bytes at once.
    ///
    /// This is how the engine stores shared values (an Arrow table's IPC file, a serde
    /// encoding), so that a store that can write as the bytes come (`DirStore` streams them
    /// into its file while hashing them) never needs the whole encoding in memory. If `write`
    /// fails, nothing is stored and its error is returned. The default collects the bytes in
    /// memory and calls `put`, so a store that only implements `put` works unchanged.
    fn put_with(&self, write: &mut dyn FnMut(&mut dyn io::Write) -> Result<()>) -> Result<ShareKey> {
        let mut bytes = Vec::new();
        write(&mut bytes)?;
        self.put(&bytes)
    }
    /// The bytes stored under `key`.
    fn get(&self, key: &ShareKey) -> Result<SharedBytes>;
    /// Whether `key` is stored.
    fn contains(&self, key: &ShareKey) -> bool;
    /// Number of distinct values stored.
    fn len(&self) -> usize;
    /// The keys of every value stored (to send them to workers that cannot reach this store).
    fn keys(&self) -> Vec<ShareKey>;
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes everything this store holds (files included). Also done on drop by stores that
    /// own files.
    fn clear(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_does_not_depend_on_how_the_bytes_are_cut() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        for len in [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 999, 1000] {
            let whole = ShareKey::of(&bytes[..len]);
            for cut in 0..=len.min(70) {
                for step in [1, 3, 32, 1000] {
                    let mut h = KeyHasher::new();
                    h.update(&bytes[..cut]);
                    for piece in bytes[cut..len].chunks(step) {
                        h.update(piece);
                    }
                    assert_eq!(h.finish(), whole, "len {len}, cut at {cut}, then pieces of {step}");
                    assert_eq!(h.len(), len as u64);
                }
            }
        }
    }

    #[test]
    fn keys_differ_for_every_byte_changed_and_every_length() {
        let base = vec![0u8; 100];
        let mut seen = std::collections::HashSet::new();
        for len in 0..=100 {
            assert!(seen.insert(ShareKey::of(&base[..len])), "length {len} collides");
        }
        for i in 0..100 {
            let mut v = base.clone();
            v[i] = 1;
            assert!(seen.insert(ShareKey::of(&v)), "byte {i} changed collides");
        }
    }
}
