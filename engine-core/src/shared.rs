//! [`Shared<T>`]: a large value given to every worker without a copy per worker.

use crate::share_ctx;
use crate::store::ShareKey;
use crate::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// A large read-only value shared with every worker (the Python original's `share=`).
///
/// On the serial and threads backends every worker borrows the caller's value through an
/// `Arc`: nothing is copied, whatever its size. Out-of-process backends put it once into the
/// engine's [`SharedStore`](crate::SharedStore) under `path_shared` (content-addressed: the
/// same value shared by several jobs is written once, a changed value gets a new key) and
/// workers read it from there: Arrow data ([`Frame`](crate::arrow::Frame),
/// [`Series`](crate::arrow::Series)) is mapped read-only and used zero-copy, other values are
/// decoded once per worker.
///
/// Put it in your task's `Args`; it dereferences to `T`.
///
/// ```
/// use adparallelengine_core::Shared;
/// let big = Shared::new(vec![1.0_f64; 1_000]);
/// let copy = big.clone(); // cheap: same allocation
/// assert!(std::ptr::eq(big.as_ptr(), copy.as_ptr()));
/// assert_eq!(big.len(), 1_000);
/// ```
pub struct Shared<T>(Arc<Inner<T>>);

struct Inner<T> {
    value: Arc<T>,
    /// Key of the value's encoding, once it has been stored.
    key: OnceLock<ShareKey>,
}

impl<T> Shared<T> {
    /// Wraps a value to share.
    pub fn new(value: T) -> Self {
        Self::from_arc(Arc::new(value))
    }

    /// Shares a value that is already in an `Arc`, without copying it.
    pub fn from_arc(value: Arc<T>) -> Self {
        Shared(Arc::new(Inner { value, key: OnceLock::new() }))
    }

    /// The `Arc` behind the handle.
    pub fn arc(&self) -> &Arc<T> {
        &self.0.value
    }

    /// Whether two handles point at the same value (no copy was made between them).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0.value, &b.0.value)
    }

    /// Number of handles to this value alive in this process (clones of this `Shared`).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// The key under which the value was last stored, if it was.
    pub fn stored_key(&self) -> Option<&ShareKey> {
        self.0.key.get()
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> AsRef<T> for Shared<T> {
    fn as_ref(&self) -> &T {
        &self.0.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&*self.0.value).finish()
    }
}

/// Inline (variant 0) outside a share context; a store key (variant 1) inside one; a marker
/// (variant 2) while a journal fingerprints the args. The value
/// is encoded and written once per content: later jobs only check that the store has it.
impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if crate::journal::identity::fingerprinting() {
            // A journal's header identifies the job: the content is hashed apart from the
            // args, which hold a marker in its place (never read back).
            let value = &*self.0.value;
            crate::journal::identity::add_shared(|out| encode_into(value, out)).map_err(serde::ser::Error::custom)?;
            return serializer.serialize_unit_variant("Shared", 2, "Fingerprinted");
        }
        let Some(store) = share_ctx::current() else {
            return serializer.serialize_newtype_variant("Shared", 0, "Inline", &*self.0.value);
        };
        let key = match self.0.key.get() {
            Some(k) if store.contains(k) => k.clone(),
            _ => {
                let value = &*self.0.value;
                let key = store
                    .put_with(&mut |out| share_ctx::enter_shared(Arc::clone(&store), || encode_into(value, out)))
                    .map_err(serde::ser::Error::custom)?;
                let _ = self.0.key.set(key.clone());
                key
            }
        };
        serializer.serialize_newtype_variant("Shared", 1, "Stored", &key)
    }
}

/// Writes the postcard encoding of `value` to `out` as it is made (for a store that streams it
/// into a file, no copy of the encoding in memory).
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut dyn io::Write) -> crate::Result<()> {
    /// Keeps the first I/O error, which postcard's writer flavour replaces by its own.
    struct Keep<'a> {
        out: &'a mut dyn io::Write,
        error: Option<io::Error>,
    }
    impl io::Write for Keep<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.write(buf).inspect_err(|e| {
                self.error.get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
            })
        }
        fn flush(&mut self) -> io::Result<()> {
            self.out.flush().inspect_err(|e| {
                self.error.get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
            })
        }
    }
    let mut keep = Keep { out, error: None };
    // Postcard writes small values byte by byte: a buffer in front makes those plain stores.
    let written = postcard::to_io(value, io::BufWriter::with_capacity(64 << 10, &mut keep))
        .map_err(|e| e.to_string())
        .and_then(|w| w.into_inner().map(|_| ()).map_err(|e| e.error().to_string()));
    written.map_err(|e| match keep.error.take() {
        Some(io) => Error::Store(format!("cannot write the shared value: {io}")),
        None => Error::Store(format!("cannot encode the shared value: {e}")),
    })
}

#[derive(Deserialize)]
#[serde(rename = "Shared")]
enum Repr<T> {
    Inline(T),
    Stored(ShareKey),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Repr::<T>::deserialize(deserializer)? {
            Repr::Inline(v) => Ok(Shared::new(v)),
            Repr::Stored(key) => {
                let store = share_ctx::current().ok_or_else(|| {
                    serde::de::Error::custom(format!("shared value {key} is in a store, but no store is open here"))
                })?;
                let bytes = store.get(&key).map_err(serde::de::Error::custom)?;
                let value: T = share_ctx::enter_shared(store, || postcard::from_bytes((*bytes).as_ref()))
                    .map_err(|e| serde::de::Error::custom(format!("cannot decode shared value {key}: {e}")))?;
                let shared = Shared::new(value);
                let _ = shared.0.key.set(key);
                Ok(shared)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SharedBytes, SharedStore};
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Counting {
        map: Mutex<HashMap<ShareKey, Arc<Vec<u8>>>>,
        puts: Mutex<usize>,
    }
    impl SharedStore for Counting {
        fn put(&self, bytes: &[u8]) -> crate::Result<ShareKey> {
            *self.puts.lock().unwrap() += 1;
            let k = ShareKey::of(bytes);
            self.map.lock().unwrap().insert(k.clone(), Arc::new(bytes.to_vec()));
            Ok(k)
        }
        fn get(&self, key: &ShareKey) -> crate::Result<SharedBytes> {
            Ok(self.map.lock().unwrap()[key].clone() as SharedBytes)
        }
        fn contains(&self, key: &ShareKey) -> bool {
            self.map.lock().unwrap().contains_key(key)
        }
        fn len(&self) -> usize {
            self.map.lock().unwrap().len()
        }
        fn keys(&self) -> Vec<ShareKey> {
            self.map.lock().unwrap().keys().cloned().collect()
        }
        fn clear(&self) -> crate::Result<()> {
            self.map.lock().unwrap().clear();
            Ok(())
        }
    }

    #[test]
    fn inline_without_a_store_stored_once_with_one() {
        let v = Shared::new(vec![7u32; 1000]);
        let inline = postcard::to_allocvec(&v).unwrap();
        assert!(inline.len() > 1000);
        let back: Shared<Vec<u32>> = postcard::from_bytes(&inline).unwrap();
        assert_eq!(*back, *v);

        let store = Arc::new(Counting::default());
        let dyn_store: Arc<dyn SharedStore> = store.clone();
        let a = share_ctx::with_store(Arc::clone(&dyn_store), || postcard::to_allocvec(&v)).unwrap();
        let b = share_ctx::with_store(Arc::clone(&dyn_store), || postcard::to_allocvec(&v)).unwrap();
        assert!(a.len() < 64, "only a key travels: {} bytes", a.len());
        assert_eq!(a, b);
        assert_eq!(*store.puts.lock().unwrap(), 1, "written once, however many jobs send it");
        let back: Shared<Vec<u32>> =
            share_ctx::with_store(Arc::clone(&dyn_store), || postcard::from_bytes(&a)).unwrap();
        assert_eq!(*back, *v);
        // Without the store, a stored value cannot be read: a clear error.
        let err = postcard::from_bytes::<Shared<Vec<u32>>>(&a).unwrap_err();
        assert!(!err.to_string().is_empty());
        // A new value under the same name gets a new key.
        let w = Shared::new(vec![8u32; 1000]);
        let c = share_ctx::with_store(dyn_store, || postcard::to_allocvec(&w)).unwrap();
        assert_ne!(a, c);
    }
}
