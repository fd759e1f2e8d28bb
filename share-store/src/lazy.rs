//! An engine's share store for workers that see the driver's file system (worker processes,
//! MPI ranks on a shared file system): a private directory under `path_shared`, made on the
//! first shared value (an engine that never shares makes none), removed when the engine is
//! dropped, and on Ctrl-C (a cleanup registered with [`register_cleanup`](adparallelengine_core::remote::register_cleanup)).

use crate::DirStore;
use adparallelengine_core::remote;
use adparallelengine_core::{Result, ShareKey, SharedBytes, SharedStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A [`DirStore`] created on first use.
///
/// ```
/// use adparallelengine_core::SharedStore;
/// let store = adparallelengine_store::LazyDirStore::new(None);
/// assert!(store.dir().is_none(), "nothing shared, nothing made");
/// let key = store.put(b"table")?;
/// let dir = store.dir().unwrap();
/// assert_eq!((*adparallelengine_store::open_dir_view(dir.to_str().unwrap())?.get(&key)?).as_ref(), b"table");
/// drop(store);
/// assert!(!dir.exists());
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
pub struct LazyDirStore {
    parent: Option<PathBuf>,
    inner: Mutex<Option<Arc<DirStore>>>,
    cleanup_id: u64,
}

impl LazyDirStore {
    /// A store that will make its directory under `parent` (default: the system temp dir).
    pub fn new(parent: Option<PathBuf>) -> Self {
        LazyDirStore { parent, inner: Mutex::new(None), cleanup_id: remote::cleanup_id() }
    }

    fn existing(&self) -> Option<Arc<DirStore>> {
        self.inner.lock().ok().and_then(|g| g.clone())
    }

    fn get_or_create(&self) -> Result<Arc<DirStore>> {
        let mut g =
            self.inner.lock().map_err(|_| adparallelengine_core::Error::Store("share store lock poisoned".into()))?;
        if let Some(s) = g.as_ref() {
            return Ok(Arc::clone(s));
        }
        let store = Arc::new(DirStore::create(self.parent.as_deref())?);
        let dir = store.path().to_path_buf();
        tracing::debug!(dir = %dir.display(), "share store created");
        remote::register_cleanup(self.cleanup_id, move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
        *g = Some(Arc::clone(&store));
        Ok(store)
    }

    /// The directory, once created.
    pub fn dir(&self) -> Option<PathBuf> {
        self.existing().map(|s| s.path().to_path_buf())
    }
}

impl Drop for LazyDirStore {
    fn drop(&mut self) {
        remote::unregister_cleanup(self.cleanup_id);
        // Dropping the DirStore removes its directory.
    }
}

impl SharedStore for LazyDirStore {
    fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
        self.get_or_create()?.put(bytes)
    }
    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        match self.existing() {
            Some(s) => s.get(key),
            None => Err(adparallelengine_core::Error::Store(format!(
                "no shared value under key {key}: nothing was shared yet"
            ))),
        }
    }
    fn contains(&self, key: &ShareKey) -> bool {
        self.existing().is_some_and(|s| s.contains(key))
    }
    fn len(&self) -> usize {
        self.existing().map_or(0, |s| s.len())
    }
    fn keys(&self) -> Vec<ShareKey> {
        self.existing().map_or_else(Vec::new, |s| s.keys())
    }
    fn clear(&self) -> Result<()> {
        match self.existing() {
            Some(s) => s.clear(),
            None => Ok(()),
        }
    }
}

/// A worker's own store for values sent over its connection (`ToWorker::Blob`): a private
/// directory in the system temp dir, removed when the worker ends or is interrupted.
pub fn local_dir_store() -> Result<Arc<dyn SharedStore>> {
    Ok(Arc::new(LazyDirStore::new(None)))
}

/// A worker's read-only view of its driver's store (the opener for
/// `adparallelengine_core::remote::serve_connection`).
pub fn open_dir_view(dir: &str) -> Result<Arc<dyn SharedStore>> {
    Ok(Arc::new(DirStore::open(Path::new(dir))?))
}
