//! What a journal's header says about its job, and how two of them differ.
//!
//! The args and the init argument are identified by a hash of their postcard encoding, in
//! which every [`Shared`](crate::Shared) value stands as a marker: the shared values are
//! hashed apart (their content, Arrow data included, streamed through the hasher without a
//! copy), so that a changed shared table is told apart from changed args.

use crate::error::{Error, Result};
use crate::store::{KeyHasher, ShareKey, SharedBytes, SharedStore};
use crate::task::Task;
use serde::Serialize;
use std::cell::RefCell;
use std::io;
use std::sync::Arc;

/// The identity of a job, as a journal's header holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) task: String,
    pub(crate) version: String,
    pub(crate) item_type: String,
    pub(crate) output_type: String,
    pub(crate) args: String,
    pub(crate) init: String,
    pub(crate) shared: String,
    /// The number of items, when the job knew it.
    pub(crate) len: Option<u64>,
}

impl Identity {
    /// The identity of a job of `T` with these args, init argument and length.
    pub(crate) fn of<T: Task>(version: &str, args: &T::Args, init: &T::Init, len: Option<usize>) -> Result<Self> {
        let (args, shared_in_args) = fingerprint(args)?;
        let (init, shared_in_init) = fingerprint(init)?;
        let mut shared = KeyHasher::new();
        shared.update(shared_in_args.as_bytes());
        shared.update(shared_in_init.as_bytes());
        Ok(Identity {
            task: T::name().to_string(),
            version: version.to_string(),
            item_type: std::any::type_name::<T::Item>().to_string(),
            output_type: std::any::type_name::<T::Output>().to_string(),
            args,
            init,
            shared: shared.finish().as_str().to_string(),
            len: len.map(|n| n as u64),
        })
    }

    /// What differs between the identity a journal holds (`self`) and this job's, in words
    /// (empty: the same job). A journal that did not know its length matches any length.
    pub(crate) fn differences(&self, job: &Identity) -> Vec<String> {
        let mut out = Vec::new();
        let mut named = |what: &str, journal: &str, job: &str| {
            if journal != job {
                out.push(format!("{what}: the journal's is `{journal}`, this job's `{job}`"));
            }
        };
        named("task", &self.task, &job.task);
        named("version", &self.version, &job.version);
        named("item type", &self.item_type, &job.item_type);
        named("output type", &self.output_type, &job.output_type);
        if self.args != job.args {
            out.push("args differ (a hash of their encoding)".into());
        }
        if self.init != job.init {
            out.push("the init argument differs (a hash of its encoding)".into());
        }
        if self.shared != job.shared {
            out.push("shared values differ (a hash of their content)".into());
        }
        if let (Some(a), Some(b)) = (self.len, job.len) {
            if a != b {
                out.push(format!("length: the journal's job had {a} items, this one has {b}"));
            }
        }
        out
    }
}

thread_local! {
    /// While a job's args are fingerprinted: the hash of the shared values met so far.
    static SHARED: RefCell<Option<KeyHasher>> = const { RefCell::new(None) };
}

/// Whether a value is being fingerprinted on this thread (then a `Shared` value adds its
/// content to [`add_shared`] and stands as a marker in the encoding).
pub(crate) fn fingerprinting() -> bool {
    SHARED.with(|s| s.borrow().is_some())
}

/// Hashes the encoding that `write` writes (a shared value's) into the shared values' hash.
pub(crate) fn add_shared(write: impl FnOnce(&mut dyn io::Write) -> Result<()>) -> Result<()> {
    let mut hasher = HashWriter(KeyHasher::new());
    // Arrow data inside a shared value goes to the context's store as its own file: here that
    // "store" hashes it as it streams by, so a 1 GiB table is never copied.
    crate::share_ctx::enter_shared(Arc::new(HashingStore), || write(&mut hasher))?;
    let key = hasher.0.finish();
    SHARED.with(|s| {
        if let Some(h) = s.borrow_mut().as_mut() {
            h.update(key.as_str().as_bytes());
        }
    });
    Ok(())
}

/// The hash of `value`'s encoding (shared values as markers) and the hash of the shared
/// values in it.
fn fingerprint<A: Serialize>(value: &A) -> Result<(String, String)> {
    struct Restore(Option<KeyHasher>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SHARED.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let outer = Restore(SHARED.with(|s| s.borrow_mut().replace(KeyHasher::new())));
    let mut hasher = HashWriter(KeyHasher::new());
    let written = postcard::to_io(value, io::BufWriter::with_capacity(64 << 10, &mut hasher))
        .map_err(|e| e.to_string())
        .and_then(|w| w.into_inner().map(|_| ()).map_err(|e| e.error().to_string()));
    let shared = SHARED.with(|s| s.borrow().as_ref().map(KeyHasher::finish));
    drop(outer);
    written.map_err(|e| Error::Codec(format!("cannot fingerprint the job's args for its journal: {e}")))?;
    let shared = shared.unwrap_or_else(|| ShareKey::of(b""));
    Ok((hasher.0.finish().as_str().to_string(), shared.as_str().to_string()))
}

/// An `io::Write` that hashes what it is given.
struct HashWriter(KeyHasher);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The store that Arrow data inside a fingerprinted shared value is "put" in: it hashes the
/// bytes and keeps nothing.
struct HashingStore;

impl SharedStore for HashingStore {
    fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
        Ok(ShareKey::of(bytes))
    }
    fn put_with(&self, write: &mut dyn FnMut(&mut dyn io::Write) -> Result<()>) -> Result<ShareKey> {
        let mut hasher = HashWriter(KeyHasher::new());
        write(&mut hasher)?;
        Ok(hasher.0.finish())
    }
    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        Err(Error::Store(format!("value {key} was only hashed, not stored")))
    }
    fn contains(&self, _: &ShareKey) -> bool {
        false
    }
    fn len(&self) -> usize {
        0
    }
    fn keys(&self) -> Vec<ShareKey> {
        Vec::new()
    }
    fn clear(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shared;

    #[test]
    fn shared_values_are_hashed_apart_from_the_args() {
        let a = fingerprint(&(1u32, Shared::new(vec![1u8; 1000]))).unwrap();
        let b = fingerprint(&(1u32, Shared::new(vec![2u8; 1000]))).unwrap();
        let c = fingerprint(&(2u32, Shared::new(vec![1u8; 1000]))).unwrap();
        assert_eq!(a.0, b.0, "same args but the shared value");
        assert_ne!(a.1, b.1, "another shared value");
        assert_ne!(a.0, c.0, "other args");
        assert_eq!(a.1, c.1, "same shared value");
        assert_eq!(a, fingerprint(&(1u32, Shared::new(vec![1u8; 1000]))).unwrap(), "stable");
        assert!(!fingerprinting(), "the marker is gone after");
    }

    #[test]
    fn a_fingerprinted_shared_value_keeps_no_key() {
        let s = Shared::new(7u64);
        fingerprint(&s).unwrap();
        assert!(s.stored_key().is_none());
    }
}
