//! The engine's share store on this machine: a private directory under `path_shared`, made
//! on the first shared value (an engine that never shares makes none), removed when the
//! engine is dropped, and on Ctrl-C.

use crate::cleanup;
use engine_core::{Result, ShareKey, SharedBytes, SharedStore};
use share_store::DirStore;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A [`DirStore`] created on first use.
pub(crate) struct LazyStore {
    parent: Option<PathBuf>,
    inner: Mutex<Option<Arc<DirStore>>>,
    cleanup_id: u64,
}

impl LazyStore {
    pub(crate) fn new(parent: Option<PathBuf>) -> Self {
        LazyStore { parent, inner: Mutex::new(None), cleanup_id: NEXT_ID.fetch_add(1, Ordering::Relaxed) }
    }

    fn existing(&self) -> Option<Arc<DirStore>> {
        self.inner.lock().ok().and_then(|g| g.clone())
    }

    fn get_or_create(&self) -> Result<Arc<DirStore>> {
        let mut g = self.inner.lock().map_err(|_| engine_core::Error::Store("share store lock poisoned".into()))?;
        if let Some(s) = g.as_ref() {
            return Ok(Arc::clone(s));
        }
        let store = Arc::new(DirStore::create(self.parent.as_deref())?);
        let dir = store.path().to_path_buf();
        tracing::debug!(dir = %dir.display(), "share store created");
        cleanup::register_cleanup(self.cleanup_id, move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
        *g = Some(Arc::clone(&store));
        Ok(store)
    }

    /// The directory, once created.
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        self.existing().map(|s| s.path().to_path_buf())
    }
}

impl Drop for LazyStore {
    fn drop(&mut self) {
        cleanup::unregister_cleanup(self.cleanup_id);
        // Dropping the DirStore removes its directory.
    }
}

impl SharedStore for LazyStore {
    fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
        self.get_or_create()?.put(bytes)
    }
    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        match self.existing() {
            Some(s) => s.get(key),
            None => Err(engine_core::Error::Store(format!("no shared value under key {key}: nothing was shared yet"))),
        }
    }
    fn contains(&self, key: &ShareKey) -> bool {
        self.existing().is_some_and(|s| s.contains(key))
    }
    fn len(&self) -> usize {
        self.existing().map_or(0, |s| s.len())
    }
    fn clear(&self) -> Result<()> {
        match self.existing() {
            Some(s) => s.clear(),
            None => Ok(()),
        }
    }
}

/// A worker's read-only view of its driver's store.
pub(crate) fn open_view(dir: &str) -> Result<Arc<dyn SharedStore>> {
    Ok(Arc::new(DirStore::open(Path::new(dir))?))
}
