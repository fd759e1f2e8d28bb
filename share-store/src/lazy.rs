//! An engine's share store for workers that see the driver's file system (worker processes,
//! MPI ranks on a shared file system): a private directory under `path_shared`, made on the
//! first shared value (an engine that never shares makes none), removed when the engine is
//! dropped, and on Ctrl-C (a cleanup registered with [`register_cleanup`](adparallelengine_core::remote::register_cleanup)).
//! A process killed outright (SIGKILL) removes nothing: the next store made in the same
//! directory, by any process of the same user on the same machine, sweeps it (see
//! [`DirStore::create`]).

use crate::leftovers::Role;
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
    role: Role,
    inner: Mutex<Option<Arc<DirStore>>>,
    cleanup_id: u64,
}

impl LazyDirStore {
    /// A store that will make its directory under `parent` (default: the system temp dir).
    pub fn new(parent: Option<PathBuf>) -> Self {
        LazyDirStore::with_role(parent, Role::Driver)
    }

    /// A store whose directory is named for `role`.
    pub(crate) fn with_role(parent: Option<PathBuf>, role: Role) -> Self {
        LazyDirStore { parent, role, inner: Mutex::new(None), cleanup_id: remote::cleanup_id() }
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
        let store = Arc::new(DirStore::create_as(self.parent.as_deref(), self.role)?);
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
    fn put_with(&self, write: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>) -> Result<ShareKey> {
        self.get_or_create()?.put_with(write)
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
/// directory `adparallelengine-local-<pid>-<start>-<host>-<random>` in the system temp dir,
/// made on the first value, removed when the worker ends or is interrupted. Making it sweeps
/// the temp dir as [`DirStore::create`] does, so the directories of workers (pods, MPI ranks)
/// and drivers that were killed outright go too.
pub fn local_dir_store() -> Result<Arc<dyn SharedStore>> {
    Ok(Arc::new(LazyDirStore::with_role(None, Role::Worker)))
}

/// A worker's read-only view of its driver's store (the opener for
/// `adparallelengine_core::remote::serve_connection`).
pub fn open_dir_view(dir: &str) -> Result<Arc<dyn SharedStore>> {
    Ok(Arc::new(DirStore::open(Path::new(dir))?))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::leftovers::{dir_name, parse_name, Owner};
    use std::os::unix::fs::PermissionsExt;

    /// A store directory as a process killed outright leaves it, under `parent`.
    fn left_by_a_dead_process(parent: &Path, role: Role) -> PathBuf {
        let me = Owner::me().expect("/proc says who this process is");
        let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        let dead = Owner { pid: max + 1, ..me };
        let dir = parent.join(dir_name(role, &dead, 42));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("k.bin"), b"stale").unwrap();
        dir
    }

    #[test]
    fn the_first_value_makes_a_named_directory_and_sweeps_its_parent() {
        let parent = std::env::temp_dir().join(format!("share-store-lazy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let driver_left = left_by_a_dead_process(&parent, Role::Driver);
        let worker_left = left_by_a_dead_process(&parent, Role::Worker);
        for role in [Role::Driver, Role::Worker] {
            let store = LazyDirStore::with_role(Some(parent.clone()), role);
            assert!(store.dir().is_none());
            assert!(driver_left.exists() && worker_left.exists(), "{role:?}: nothing made, nothing swept");
            let key = store.put(b"fresh").unwrap();
            let dir = store.dir().unwrap();
            assert!(!driver_left.exists() && !worker_left.exists(), "{role:?}: the dead processes' directories stay");
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            let (parsed, owner) = parse_name(&name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((parsed, owner), (role, Owner::me().unwrap()), "{name}");
            assert_eq!(name.starts_with("adparallelengine-local-"), role == Role::Worker, "{name}");
            assert_eq!((*store.get(&key).unwrap()).as_ref(), b"fresh");
            drop(store);
            assert!(!dir.exists());
            left_by_a_dead_process(&parent, Role::Driver);
            left_by_a_dead_process(&parent, Role::Worker);
        }
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_workers_local_store_is_in_the_temp_dir_with_its_own_prefix() {
        let store = local_dir_store().unwrap();
        let key = store.put(b"shipped").unwrap();
        assert_eq!((*store.get(&key).unwrap()).as_ref(), b"shipped");
        let mine =
            |n: &str| parse_name(n).is_some_and(|(role, owner)| role == Role::Worker && owner == Owner::me().unwrap());
        let names = || -> Vec<String> {
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| mine(n))
                .collect()
        };
        let before = names();
        assert!(!before.is_empty(), "no local store of this process in the temp dir");
        drop(store);
        assert_eq!(names().len(), before.len() - 1, "the local store's directory is removed with it");
    }
}
