//! The [`SharedStore`] trait: where shared values live for workers that cannot borrow them.

use crate::error::Result;
use std::fmt;
use std::io;
use std::sync::Arc;

/// The content address of a stored value: a hash of its bytes, as 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ShareKey(String);

impl ShareKey {
    /// The key of these bytes: a 128-bit hash of the content (four multiply-rotate lanes over
    /// 8-byte words, several GB/s), so equal values share one entry and a changed value gets a
    /// new key. Not cryptographic: the store trusts its own driver.
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

const P1: u64 = 0x9E37_79B9_7F4A_7C15;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// splitmix64's finaliser.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A little-endian word of up to 8 bytes, zero-padded.
fn word(c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..c.len()].copy_from_slice(c);
    u64::from_le_bytes(w)
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
#[derive(Clone, Debug)]
pub struct KeyHasher {
    lanes: [u64; LANES],
    /// Bytes not yet hashed: always fewer than one block.
    pending: [u8; BLOCK],
    pending_len: usize,
    len: u64,
}

/// Independent multiply-rotate lanes: four chains of dependent multiplies keep a core's
/// multiplier busy (one lane per 8 bytes of a 32-byte block), where one chain would leave it
/// waiting on its own latency.
const LANES: usize = 4;
const BLOCK: usize = 8 * LANES;
const ROTATIONS: [u32; LANES] = [29, 31, 27, 33];

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::new()
    }
}

impl KeyHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        KeyHasher { lanes: [P1, P2, P1 ^ P2, P1.rotate_left(32)], pending: [0; BLOCK], pending_len: 0, len: 0 }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn blocks(lanes: &mut [u64; LANES], bytes: &[u8]) {
        // Locals in the hot loop: the lanes stay in registers.
        let [mut a, mut b, mut c, mut d] = *lanes;
        for blk in bytes.chunks_exact(BLOCK) {
            a = (a ^ word(&blk[..8])).wrapping_mul(P2).rotate_left(ROTATIONS[0]);
            b = (b ^ word(&blk[8..16])).wrapping_mul(P1).rotate_left(ROTATIONS[1]);
            c = (c ^ word(&blk[16..24])).wrapping_mul(P2).rotate_left(ROTATIONS[2]);
            d = (d ^ word(&blk[24..32])).wrapping_mul(P1).rotate_left(ROTATIONS[3]);
        }
        *lanes = [a, b, c, d];
    }

    /// Hashes the next `bytes`.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            Self::blocks(&mut self.lanes, &block);
            self.pending_len = 0;
        }
        let whole = bytes.len() - bytes.len() % BLOCK;
        Self::blocks(&mut self.lanes, &bytes[..whole]);
        let rest = &bytes[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The key of every byte given to [`update`](Self::update).
    pub fn finish(&self) -> ShareKey {
        let mut lanes = self.lanes;
        // The last, partial block: up to 8 bytes per lane, zero-padded (the length tells
        // "ab" from "ab\0").
        for (i, lane) in lanes.iter_mut().enumerate() {
            let from = (8 * i).min(self.pending_len);
            let to = (8 * i + 8).min(self.pending_len);
            *lane = (*lane ^ word(&self.pending[from..to])).wrapping_mul(if i % 2 == 0 { P2 } else { P1 });
        }
        let [a, b, c, d] = lanes;
        let len = self.len;
        let x = mix(a ^ mix(c ^ len));
        let y = mix(b ^ mix(d.wrapping_add(len)));
        let hi = mix(x ^ y.rotate_left(32));
        let lo = mix(y ^ x.wrapping_mul(P1));
        ShareKey(format!("{hi:016x}{lo:016x}"))
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
