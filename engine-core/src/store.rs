//! The [`SharedStore`] trait: where shared values live for workers that cannot borrow them.

use crate::error::Result;
use std::fmt;
use std::sync::Arc;

/// The content address of a stored value: a hash of its bytes, as 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ShareKey(String);

impl ShareKey {
    /// The key of these bytes: a 128-bit hash of the content (two multiply-rotate lanes over
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
        const P1: u64 = 0x9E37_79B9_7F4A_7C15;
        const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
        fn mix(x: u64) -> u64 {
            // splitmix64's finaliser.
            let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        }
        let word = |c: &[u8]| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        };
        let (mut a, mut b) = (P1, P2);
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            a = (a ^ word(&c[..8])).wrapping_mul(P2).rotate_left(29);
            b = (b ^ word(&c[8..])).wrapping_mul(P1).rotate_left(31);
        }
        let rest = chunks.remainder();
        let (r1, r2) = rest.split_at(rest.len().min(8));
        a = (a ^ word(r1)).wrapping_mul(P2);
        b = (b ^ word(r2)).wrapping_mul(P1);
        let len = bytes.len() as u64;
        let hi = mix(a ^ mix(b ^ len));
        let lo = mix(b ^ mix(a.wrapping_add(len)));
        ShareKey(format!("{hi:016x}{lo:016x}"))
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
