//! [`DirStore`]: content-addressed files in a private directory, mapped read-only on `get`.

use crate::leftovers::{self, Owner, Role};
use crate::staging::{HashingWriter, TempFile};
use adparallelengine_core::{Error, Result, ShareKey, SharedBytes, SharedStore};
use memmap2::Mmap;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// Extension of the file holding one value.
const EXT: &str = "bin";
/// Start of the name of a file being written (renamed to `<key>.bin` once complete).
const TMP_PREFIX: &str = ".tmp-";

/// Content-addressed values as files in one directory, mapped read-only by [`get`](Self::get).
///
/// The driver makes the store with [`create`](Self::create): a fresh private directory (mode
/// 0700) that the store owns and removes, with every file in it, on drop and on
/// [`clear`](SharedStore::clear). Each value is one file `<key>.bin` (mode 0600) named by
/// [`ShareKey::of`] its bytes, written once under a temporary name and renamed into place, so a
/// reader never sees a partial file and a file is never modified after it appears. Putting the
/// same bytes again writes nothing; putting new bytes gives a new key, so a second share under
/// the same name never serves the old data.
///
/// A worker process of the same machine opens the directory with [`open`](Self::open): a
/// read-only view whose [`get`](Self::get) maps the file (no copy, pages shared with every other
/// process mapping it) and whose drop removes nothing.
///
/// Nothing else may modify a store file in place while it is mapped: as with any file mapping,
/// truncating it under a reader makes that reader's process fault (SIGBUS) on access. The store
/// itself never does (it only creates, renames and removes whole files).
///
/// ```
/// use adparallelengine_core::SharedStore;
/// use adparallelengine_store::DirStore;
///
/// let store = DirStore::create(None)?;
/// let a = store.put(b"big table")?;
/// assert_eq!(store.put(b"big table")?, a); // same content, same key, written once
/// assert_eq!(store.writes(), 1);
/// let view = DirStore::open(store.path())?;
/// assert_eq!((*view.get(&a)?).as_ref(), b"big table");
/// assert!(view.put(b"other").is_err()); // read-only
/// let dir = store.path().to_path_buf();
/// drop(view); // removes nothing
/// assert!(dir.is_dir());
/// drop(store); // removes the directory and its files
/// assert!(!dir.exists());
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
pub struct DirStore {
    dir: PathBuf,
    /// Made by `create`: writable, removed on drop and clear. A view from `open` is not.
    owned: bool,
    /// Whether the directory exists (false after `clear`, until the next `put` makes it again).
    /// Puts hold it shared, `clear` exclusive, so a clear never races a write.
    present: RwLock<bool>,
    /// Keys being written by a thread of this process; others putting the same key wait.
    inflight: Mutex<HashSet<ShareKey>>,
    written: Condvar,
    writes: AtomicUsize,
    /// Parent directories `create` made because they were missing, deepest first: removed
    /// with the store when empty, so `path_shared("tests/data/shared")` leaves no trace.
    made_parents: Vec<PathBuf>,
}

impl fmt::Debug for DirStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirStore")
            .field("dir", &self.dir)
            .field("read_only", &!self.owned)
            .field("writes", &self.writes())
            .finish()
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Store(format!("{what} {}: {e}", path.display()))
}

fn poisoned(dir: &Path) -> Error {
    Error::Store(format!("directory store {} lock poisoned by a panic", dir.display()))
}

/// 64 random bits for a directory name: std's per-process random hasher keys, plus the time and
/// a counter so that two calls never give the same value.
fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Makes `dir` (not its parents), failing if it exists, readable by its owner only.
fn make_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new().mode(0o700).create(dir)?;
        // The umask can only have removed bits; set the mode exactly.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir(dir)
    }
}

fn remove_dir_all_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| io_error("cannot make absolute the path", path, e))
}

/// Removes its key from the in-flight set and wakes the waiting puts, even on error or panic.
struct Claim<'a> {
    store: &'a DirStore,
    key: ShareKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut inflight = match self.store.inflight.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        inflight.remove(&self.key);
        drop(inflight);
        self.store.written.notify_all();
    }
}

impl DirStore {
    /// Makes a fresh private directory `adparallelengine-<pid>-<start>-<host>-<random>` (mode
    /// 0700) under `parent` (made with its parents if missing) or, without one, under
    /// [`std::env::temp_dir`], and a store that owns it: dropping the store or
    /// [`clear`](SharedStore::clear)ing it removes the directory and every file in it.
    ///
    /// The name says whose the directory is: this process's pid and start time (so that a
    /// recycled pid is not taken for it), and a tag of this machine's boot and pid namespace.
    /// Having made it, the store sweeps `parent` once: the directories other stores left there
    /// when their process was killed outright (SIGKILL: no drop, no Ctrl-C cleanup), named
    /// exactly so, owned by the same user, of mode 0700, from this machine and pid namespace,
    /// whose process is gone (or its pid now another process), are removed, each logged at
    /// info. Nothing else is touched, no symlink is followed, a live process's directory is
    /// left alone, and so are old-style names (`adparallelengine-<pid>-<16 hex>`), which do not
    /// say where their pid lives. Where `/proc` cannot say who this process is, the store
    /// gets such an old-style name and sweeps nothing.
    ///
    /// The path is made absolute, so worker processes with another working directory can
    /// [`open`](Self::open) it.
    pub fn create(parent: Option<&Path>) -> Result<DirStore> {
        DirStore::create_as(parent, Role::Driver)
    }

    /// [`create`](Self::create) for `role`: a worker's local store has its own prefix.
    pub(crate) fn create_as(parent: Option<&Path>, role: Role) -> Result<DirStore> {
        let parent = match parent {
            Some(p) => p.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let parent = absolute(&parent)?;
        let made_parents: Vec<PathBuf> =
            parent.ancestors().take_while(|p| !p.exists()).map(Path::to_path_buf).collect();
        fs::create_dir_all(&parent)
            .map_err(|e| io_error("cannot create the shared-store parent directory", &parent, e))?;
        let me = Owner::me();
        if me.is_none() {
            tracing::debug!("/proc does not say who this process is: a store directory no sweep removes");
        }
        const ATTEMPTS: usize = 16;
        for _ in 0..ATTEMPTS {
            let name = match &me {
                Some(me) => leftovers::dir_name(role, me, random_u64()),
                None => leftovers::legacy_dir_name(role, random_u64()),
            };
            let dir = parent.join(name);
            match make_private_dir(&dir) {
                Ok(()) => {
                    if let Some(me) = &me {
                        leftovers::sweep(&parent, me, &dir);
                    }
                    let mut store = DirStore::new(dir, true);
                    store.made_parents = made_parents;
                    return Ok(store);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("cannot create the shared-store directory", &dir, e)),
            }
        }
        Err(Error::Store(format!(
            "cannot create a shared-store directory under {}: {ATTEMPTS} random names were all taken",
            parent.display()
        )))
    }

    /// A read-only view of the existing store directory `dir` (what a worker process uses):
    /// [`get`](Self::get) and [`contains`](SharedStore::contains) work,
    /// [`put`](SharedStore::put) and [`clear`](SharedStore::clear) are errors, and dropping it
    /// removes nothing.
    pub fn open(dir: &Path) -> Result<DirStore> {
        let meta = fs::metadata(dir).map_err(|e| io_error("cannot open the shared-store directory", dir, e))?;
        if !meta.is_dir() {
            return Err(Error::Store(format!(
                "cannot open the shared-store directory {}: not a directory",
                dir.display()
            )));
        }
        Ok(DirStore::new(absolute(dir)?, false))
    }

    fn new(dir: PathBuf, owned: bool) -> DirStore {
        DirStore {
            dir,
            owned,
            present: RwLock::new(true),
            inflight: Mutex::new(HashSet::new()),
            written: Condvar::new(),
            writes: AtomicUsize::new(0),
            made_parents: Vec::new(),
        }
    }

    /// The store's directory (absolute).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the value of `key`: `<dir>/<key>.bin`.
    pub fn file_path(&self, key: &ShareKey) -> PathBuf {
        self.dir.join(format!("{key}.{EXT}"))
    }

    /// Whether this is a read-only view made by [`open`](Self::open).
    pub fn is_read_only(&self) -> bool {
        !self.owned
    }

    /// How many files this store actually wrote (a put of bytes already stored writes none).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Maps the value of `key` read-only: the same as [`SharedStore::get`], with the concrete
    /// type.
    pub fn map(&self, key: &ShareKey) -> Result<MappedFile> {
        let path = self.file_path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Store(format!(
                    "no shared value under key {key} in directory {} (no file {})",
                    self.dir.display(),
                    path.display()
                )))
            }
            Err(e) => return Err(io_error("cannot open the shared value", &path, e)),
        };
        // SAFETY: the mapping is only sound if nobody modifies the file while it is mapped.
        // Store files are written completely under a temporary name and renamed into place,
        // never written again; removing or replacing the name (clear, drop, a rename by a
        // concurrent put of the same content) leaves the mapped inode intact.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error("cannot map the shared value", &path, e))?;
        Ok(MappedFile { map, path })
    }

    fn read_only(&self, what: &str) -> Error {
        Error::Store(format!(
            "cannot {what}: this view of the shared-store directory {} is read-only \
             (opened with DirStore::open)",
            self.dir.display()
        ))
    }

    /// Holds the directory shared, making it again first if `clear` removed it.
    fn directory(&self) -> Result<RwLockReadGuard<'_, bool>> {
        loop {
            {
                let present = self.present.read().map_err(|_| poisoned(&self.dir))?;
                if *present {
                    return Ok(present);
                }
            }
            let mut present = self.present.write().map_err(|_| poisoned(&self.dir))?;
            if !*present {
                make_private_dir(&self.dir)
                    .map_err(|e| io_error("cannot create again the shared-store directory", &self.dir, e))?;
                *present = true;
            }
        }
    }

    /// Waits until no other thread of this process is writing `key`, then claims it.
    fn claim(&self, key: &ShareKey) -> Result<Claim<'_>> {
        let mut inflight: MutexGuard<'_, HashSet<ShareKey>> = self.inflight.lock().map_err(|_| poisoned(&self.dir))?;
        while inflight.contains(key) {
            inflight = self.written.wait(inflight).map_err(|_| poisoned(&self.dir))?;
        }
        inflight.insert(key.clone());
        Ok(Claim { store: self, key: key.clone() })
    }

    /// A new temporary file of the directory, for the value being written under `what` (a
    /// key, or `stream` while the key is not known yet).
    fn temp_file(&self, what: &str) -> Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{what}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        TempFile::create(tmp.clone()).map_err(|e| io_error("cannot create the temporary file", &tmp, e))
    }

    /// Whether `<key>.bin` already holds the `len` bytes of `key` (then nothing is written).
    fn holds(&self, key: &ShareKey, len: u64) -> Result<bool> {
        let path = self.file_path(key);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file() && meta.len() == len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("cannot inspect the shared value", &path, e)),
        }
    }

    /// Renames the complete temporary file `tmp` to the value's name `<key>.bin`.
    fn persist(&self, tmp: TempFile, key: &ShareKey) -> Result<()> {
        let path = self.file_path(key);
        let from = tmp.path().to_path_buf();
        tmp.persist(&path)
            .map_err(|e| Error::Store(format!("cannot rename {} to {}: {e}", from.display(), path.display())))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl SharedStore for DirStore {
    /// Writes `bytes` to `<key>.bin` unless that file is already there (then writes nothing).
    fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
        if !self.owned {
            return Err(self.read_only("put a value"));
        }
        let key = ShareKey::of(bytes);
        let _directory = self.directory()?;
        let _claim = self.claim(&key)?;
        // A file of another length is not this value: it is replaced.
        if self.holds(&key, bytes.len() as u64)? {
            return Ok(key);
        }
        let mut tmp = self.temp_file(key.as_str())?;
        tmp.file().write_all(bytes).map_err(|e| io_error("cannot write the temporary file", tmp.path(), e))?;
        self.persist(tmp, &key)?;
        Ok(key)
    }

    /// Streams what `write` writes into a temporary file of the directory, hashing it on the
    /// way (in pieces of 1 MiB, large writes straight from the caller's memory), then renames
    /// the file to `<key>.bin` — or removes it if that file is already there: the value is
    /// never held in memory, and a reader never sees a partial file. The temporary file is
    /// removed whatever happens before the rename (an error of `write` or of the disk, a
    /// panic).
    fn put_with(&self, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<ShareKey> {
        if !self.owned {
            return Err(self.read_only("put a value"));
        }
        // The directory is held only to make the file and to rename it, not while `write`
        // runs: an Arrow table inside a shared value is put from within the outer value's
        // `write`, and holding a read lock twice in one thread deadlocks behind a waiting
        // `clear`. A `clear` in between removes the file; the rename then fails.
        let mut tmp = {
            let _directory = self.directory()?;
            self.temp_file("stream")?
        };
        let mut out = HashingWriter::new(tmp.file());
        write(&mut out)?;
        let (key, len) = out.finish().map_err(|e| io_error("cannot write the temporary file", tmp.path(), e))?;
        let _directory = self.directory()?;
        let _claim = self.claim(&key)?;
        if self.holds(&key, len)? {
            return Ok(key);
        }
        self.persist(tmp, &key)?;
        Ok(key)
    }

    /// Maps `<key>.bin` read-only and returns the mapping ([`MappedFile`]): nothing is copied.
    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        Ok(Arc::new(self.map(key)?))
    }

    fn contains(&self, key: &ShareKey) -> bool {
        self.file_path(key).is_file()
    }

    /// The number of `<key>.bin` files in the directory (temporary files not counted).
    fn len(&self) -> usize {
        self.keys().len()
    }

    /// The keys of the `<key>.bin` files in the directory (temporary files left out).
    fn keys(&self) -> Vec<ShareKey> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) {
                    return None;
                }
                ShareKey::parse(name.strip_suffix(&format!(".{EXT}"))?)
            })
            .collect()
    }

    /// Removes the directory and every file in it (a later `put` makes it again). An error on
    /// a read-only view.
    fn clear(&self) -> Result<()> {
        if !self.owned {
            return Err(self.read_only("clear the store"));
        }
        let mut present = self.present.write().map_err(|_| poisoned(&self.dir))?;
        remove_dir_all_if_present(&self.dir)
            .map_err(|e| io_error("cannot remove the shared-store directory", &self.dir, e))?;
        *present = false;
        Ok(())
    }
}

impl Drop for DirStore {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = remove_dir_all_if_present(&self.dir) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "cannot remove the shared-store directory"
            );
        }
        // Only empty ones: another store or the user may have put something there since.
        for parent in &self.made_parents {
            if fs::remove_dir(parent).is_err() {
                break;
            }
        }
    }
}

/// A stored value mapped read-only from its file: what `DirStore::get` returns.
///
/// The mapping stays valid after the store is cleared or dropped (the file's data lives until
/// the last mapping goes), so values handed out keep working.
pub struct MappedFile {
    map: Mmap,
    path: PathBuf,
}

impl MappedFile {
    /// The file this value was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile").field("path", &self.path).field("len", &self.map.len()).finish()
    }
}
