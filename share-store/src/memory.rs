//! [`MemoryStore`]: content-addressed bytes in memory.

use adparallelengine_core::{Error, Result, ShareKey, SharedBytes, SharedStore};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A content-addressed in-memory store.
///
/// ```
/// use adparallelengine_core::SharedStore;
/// let store = adparallelengine_store::MemoryStore::default();
/// let a = store.put(b"big table").unwrap();
/// let b = store.put(b"big table").unwrap();
/// assert_eq!(a, b);
/// assert_eq!(store.len(), 1);
/// assert_eq!((*store.get(&a).unwrap()).as_ref(), b"big table");
/// ```
#[derive(Default)]
pub struct MemoryStore {
    values: RwLock<HashMap<ShareKey, Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.len()).finish()
    }
}

fn poisoned() -> Error {
    Error::Store("memory store lock poisoned by a panic".into())
}

impl SharedStore for MemoryStore {
    fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
        let key = ShareKey::of(bytes);
        let mut map = self.values.write().map_err(|_| poisoned())?;
        map.entry(key.clone()).or_insert_with(|| Arc::new(bytes.to_vec()));
        Ok(key)
    }

    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        let map = self.values.read().map_err(|_| poisoned())?;
        match map.get(key) {
            Some(v) => Ok(Arc::clone(v) as SharedBytes),
            None => Err(Error::Store(format!("no shared value under key {key}"))),
        }
    }

    fn contains(&self, key: &ShareKey) -> bool {
        self.values.read().map(|m| m.contains_key(key)).unwrap_or(false)
    }

    fn len(&self) -> usize {
        self.values.read().map(|m| m.len()).unwrap_or(0)
    }

    fn keys(&self) -> Vec<ShareKey> {
        self.values.read().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    fn clear(&self) -> Result<()> {
        self.values.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_content_new_key_same_content_same_key() {
        let s = MemoryStore::default();
        let k1 = s.put(b"v1").unwrap();
        let k2 = s.put(b"v2").unwrap();
        assert_ne!(k1, k2, "a second share under the same name must not serve the old data");
        assert_eq!((*s.get(&k2).unwrap()).as_ref(), b"v2");
        assert_eq!(s.put(b"v1").unwrap(), k1);
        assert_eq!(s.len(), 2);
        s.clear().unwrap();
        assert!(s.is_empty());
        assert!(s.get(&k1).is_err());
    }
}
