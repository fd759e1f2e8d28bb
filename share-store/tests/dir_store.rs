//! `DirStore`: content addressing, permissions, ownership, read-only views, concurrency, errors.

use adparallelengine_core::{Error, ShareKey, SharedStore};
use adparallelengine_store::DirStore;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A parent directory private to one test, under the system temporary directory.
fn parent(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("share-store-test-{}-{test}", std::process::id()))
}

/// This process's start time: field 22 of `/proc/self/stat`.
fn start_time() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().parse().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The message of the `Error::Store` that `r` must be.
fn store_message<T>(r: adparallelengine_core::Result<T>) -> String {
    match r {
        Err(Error::Store(m)) => m,
        Err(other) => panic!("expected Error::Store, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn same_bytes_same_key_one_write_new_bytes_new_key() {
    let store = DirStore::create(None).unwrap();
    let k1 = store.put(b"v1").unwrap();
    assert_eq!(k1, ShareKey::of(b"v1"));
    assert_eq!(store.put(b"v1").unwrap(), k1);
    assert_eq!(store.writes(), 1, "the same content is written once");
    assert_eq!(store.len(), 1);

    // A second share under the same name: new bytes, new key, and the old key still serves v1.
    let k2 = store.put(b"v2").unwrap();
    assert_ne!(k1, k2, "a second share under the same name must not serve the old data");
    assert_eq!(store.writes(), 2);
    assert_eq!((*store.get(&k2).unwrap()).as_ref(), b"v2");
    assert_eq!((*store.get(&k1).unwrap()).as_ref(), b"v1");
    assert!(store.contains(&k1) && store.contains(&k2));
    assert!(!store.contains(&ShareKey::of(b"v3")));
    assert_eq!(store.len(), 2);
    assert_eq!(names(store.path()), {
        let mut v = vec![format!("{k1}.bin"), format!("{k2}.bin")];
        v.sort();
        v
    });
    assert_eq!(store.file_path(&k1), store.path().join(format!("{k1}.bin")));
}

#[test]
fn empty_value_round_trips() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"").unwrap();
    assert!((*store.get(&k).unwrap()).as_ref().is_empty());
    assert_eq!(store.put(b"").unwrap(), k);
    assert_eq!(store.writes(), 1);
}

#[test]
fn create_makes_missing_parent_and_names_the_directory() {
    let parent = parent("create").join("nested").join("deeper");
    assert!(!parent.exists());
    let store = DirStore::create(Some(&parent)).unwrap();
    assert!(store.path().is_absolute());
    assert_eq!(store.path().parent().unwrap(), parent.as_path());
    let name = store.path().file_name().unwrap().to_string_lossy().into_owned();
    // adparallelengine-<pid>-<start time>-<host>-<random>
    let prefix = format!("adparallelengine-{}-", std::process::id());
    assert!(name.starts_with(&prefix), "{name}");
    let fields: Vec<&str> = name[prefix.len()..].split('-').collect();
    assert_eq!(fields.len(), 3, "{name}");
    assert_eq!(fields[0], start_time().to_string(), "{name}: this process's start time");
    assert_eq!(fields[1].len(), 8, "{name}");
    assert_eq!(fields[2].len(), 16, "{name}");
    assert!(fields[1..].iter().all(|f| f.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))), "{name}");

    let other = DirStore::create(Some(&parent)).unwrap();
    assert_ne!(store.path(), other.path(), "every store gets a fresh directory");
    drop(other);
    assert!(parent.exists(), "a parent the store did not make is left");
    drop(store);
    assert!(!self::parent("create").exists(), "the parents the store made are removed with it, once empty");
}

#[test]
fn relative_parent_gives_an_absolute_path() {
    // Relative to the test's working directory (the crate); removed at the end.
    let rel = PathBuf::from(format!("target-test-rel-{}", std::process::id()));
    let store = DirStore::create(Some(&rel)).unwrap();
    assert!(store.path().is_absolute());
    assert!(store.path().starts_with(std::env::current_dir().unwrap().join(&rel)));
    drop(store);
    assert!(!rel.exists(), "the parent it made is removed with it");
}

#[cfg(unix)]
#[test]
fn directory_is_0700_and_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let store = DirStore::create(None).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.path()), 0o700);
    let k = store.put(b"secret").unwrap();
    assert_eq!(mode(&store.file_path(&k)), 0o600);
    // Also after clear, when a put makes the directory again.
    store.clear().unwrap();
    let k = store.put(b"secret again").unwrap();
    assert_eq!(mode(store.path()), 0o700);
    assert_eq!(mode(&store.file_path(&k)), 0o600);
}

#[test]
fn drop_removes_the_directory_and_its_files() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"value").unwrap();
    let dir = store.path().to_path_buf();
    let file = store.file_path(&k);
    assert!(file.is_file());
    drop(store);
    assert!(!file.exists());
    assert!(!dir.exists());
}

#[test]
fn drop_ignores_a_directory_already_removed() {
    let store = DirStore::create(None).unwrap();
    store.put(b"x").unwrap();
    fs::remove_dir_all(store.path()).unwrap();
    drop(store); // no panic
}

#[test]
fn clear_removes_everything_and_a_later_put_works() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"one").unwrap();
    store.put(b"two").unwrap();
    store.clear().unwrap();
    assert!(!store.path().exists(), "clear removes the directory itself");
    assert!(store.is_empty());
    assert!(!store.contains(&k));
    assert!(store.get(&k).is_err());
    store.clear().unwrap(); // twice is fine

    let k3 = store.put(b"three").unwrap();
    assert_eq!((*store.get(&k3).unwrap()).as_ref(), b"three");
    // The old value is written again: it is not there any more.
    assert_eq!(store.put(b"one").unwrap(), k);
    assert_eq!(store.writes(), 4);
    assert_eq!(store.len(), 2);
}

#[test]
fn open_view_is_read_only_and_its_drop_removes_nothing() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"shared").unwrap();
    let view = DirStore::open(store.path()).unwrap();
    assert!(view.is_read_only() && !store.is_read_only());
    assert_eq!(view.path(), store.path());
    assert!(view.contains(&k));
    assert_eq!(view.len(), 1);
    assert_eq!((*view.get(&k).unwrap()).as_ref(), b"shared");

    let e = store_message(view.put(b"other"));
    assert!(e.contains("read-only"), "{e}");
    assert!(e.contains(&store.path().display().to_string()), "{e}");
    let e = store_message(view.clear());
    assert!(e.contains("read-only"), "{e}");
    assert!(!view.contains(&ShareKey::of(b"other")));

    // Values written by the owner after the view was opened are seen too.
    let k2 = store.put(b"later").unwrap();
    assert_eq!((*view.get(&k2).unwrap()).as_ref(), b"later");

    drop(view);
    assert!(store.path().is_dir());
    assert!(store.file_path(&k).is_file());
    assert_eq!((*store.get(&k).unwrap()).as_ref(), b"shared");
}

#[test]
fn open_reports_a_missing_directory_or_a_file() {
    let missing = parent("missing").join("nope");
    let e = store_message(DirStore::open(&missing));
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("os error"), "the OS error is named: {e}");

    let store = DirStore::create(None).unwrap();
    let k = store.put(b"file").unwrap();
    let e = store_message(DirStore::open(&store.file_path(&k)));
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn missing_key_error_names_the_key_and_the_directory() {
    let store = DirStore::create(None).unwrap();
    let k = ShareKey::of(b"never stored");
    let e = store_message(store.get(&k));
    assert!(e.contains(k.as_str()), "{e}");
    assert!(e.contains(&store.path().display().to_string()), "{e}");
    // The same from a view.
    let view = DirStore::open(store.path()).unwrap();
    let e = store_message(view.get(&k));
    assert!(e.contains(k.as_str()), "{e}");
}

#[test]
fn concurrent_puts_of_the_same_bytes_leave_one_file_and_no_temp_file() {
    const THREADS: usize = 8;
    let store = Arc::new(DirStore::create(None).unwrap());
    let value: Arc<Vec<u8>> = Arc::new((0..1 << 20).map(|i| (i % 251) as u8).collect());
    let barrier = Arc::new(Barrier::new(THREADS));
    let keys: Vec<ShareKey> = (0..THREADS)
        .map(|_| {
            let (store, value, barrier) = (store.clone(), value.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.put(&value).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]));
    assert_eq!(store.writes(), 1, "exactly one thread wrote the file");
    assert_eq!(names(store.path()), vec![format!("{}.bin", keys[0])]);
    assert_eq!((*store.get(&keys[0]).unwrap()).as_ref(), value.as_slice());
}

#[test]
fn concurrent_puts_of_different_bytes_are_all_stored() {
    const THREADS: usize = 8;
    let store = Arc::new(DirStore::create(None).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..20u32)
                    .map(|i| {
                        let v = format!("thread {} value {}", t, i % 10).into_bytes();
                        (store.put(&v).unwrap(), v)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (k, v) in h.join().unwrap() {
            assert_eq!((*store.get(&k).unwrap()).as_ref(), v.as_slice());
        }
    }
    assert_eq!(store.len(), THREADS * 10);
    assert_eq!(store.writes(), THREADS * 10);
    assert!(names(store.path()).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn len_does_not_count_temporary_or_foreign_files() {
    let store = DirStore::create(None).unwrap();
    store.put(b"a").unwrap();
    fs::write(store.path().join(".tmp-abc-1-0"), b"partial").unwrap();
    fs::write(store.path().join("notes.txt"), b"x").unwrap();
    assert_eq!(store.len(), 1);
}

#[test]
fn a_mapped_value_outlives_the_store() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"still here").unwrap();
    let bytes = store.get(&k).unwrap();
    let mapped = store.map(&k).unwrap();
    assert_eq!(mapped.path(), store.file_path(&k));
    let dir = store.path().to_path_buf();
    drop(store);
    assert!(!dir.exists());
    assert_eq!((*bytes).as_ref(), b"still here");
    assert_eq!(mapped.as_ref(), b"still here");
}

#[test]
fn get_maps_the_file_without_copying() {
    let store = DirStore::create(None).unwrap();
    let k = store.put(&[7u8; 10_000]).unwrap();
    let a = store.get(&k).unwrap();
    let b = store.get(&k).unwrap();
    // Two mappings of one file: page-aligned, distinct addresses, same content.
    let (pa, pb) = ((*a).as_ref().as_ptr(), (*b).as_ref().as_ptr());
    assert_eq!(pa as usize % 4096, 0, "a mapping starts on a page");
    assert_ne!(pa, pb);
    assert_eq!((*a).as_ref(), (*b).as_ref());
}

#[test]
fn a_value_larger_than_64_mib_round_trips() {
    let len = (64 << 20) + 12_345;
    let mut value = vec![0u8; len];
    for (i, chunk) in value.chunks_mut(4096).enumerate() {
        chunk.fill((i % 253) as u8);
    }
    let start = Instant::now();
    let store = DirStore::create(None).unwrap();
    let k = store.put(&value).unwrap();
    let view = DirStore::open(store.path()).unwrap();
    let bytes = view.get(&k).unwrap();
    assert_eq!((*bytes).as_ref().len(), len);
    assert!((*bytes).as_ref() == value.as_slice());
    assert_eq!(fs::metadata(store.file_path(&k)).unwrap().len(), len as u64);
    let took = start.elapsed();
    eprintln!("put + map + compare of {len} bytes: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A worker process (this test binary, run again) opens the view, reads the value and exits;
/// its drop removes nothing.
#[test]
fn another_process_reads_through_a_view() {
    const DIR: &str = "SHARE_STORE_TEST_CHILD_DIR";
    const KEY: &str = "SHARE_STORE_TEST_CHILD_KEY";
    if let (Ok(dir), Ok(key)) = (std::env::var(DIR), std::env::var(KEY)) {
        let view = DirStore::open(Path::new(&dir)).unwrap();
        let k = ShareKey::of(b"from the driver");
        assert_eq!(k.as_str(), key);
        assert_eq!((*view.get(&k).unwrap()).as_ref(), b"from the driver");
        assert!(view.put(b"x").is_err());
        return;
    }
    let store = DirStore::create(None).unwrap();
    let k = store.put(b"from the driver").unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "another_process_reads_through_a_view", "--test-threads=1"])
        .env(DIR, store.path())
        .env(KEY, k.as_str())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the child failed: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(store.file_path(&k).is_file(), "the child's view removed nothing");
}

/// A `put_with` writer that writes `bytes` in pieces of `piece` bytes.
fn writes_in_pieces(
    bytes: &[u8],
    piece: usize,
) -> impl FnMut(&mut dyn std::io::Write) -> adparallelengine_core::Result<()> + '_ {
    move |out| {
        for p in bytes.chunks(piece.max(1)) {
            out.write_all(p).map_err(|e| Error::Store(e.to_string()))?;
        }
        Ok(())
    }
}

#[test]
fn a_streamed_put_stores_what_put_stores_under_the_same_key() {
    let store = DirStore::create(Some(&parent("stream-same"))).unwrap();
    let value: Vec<u8> = (0..3_000_017u32).map(|i| (i % 253) as u8).collect();
    let key = store.put_with(&mut writes_in_pieces(&value, 4093)).unwrap();
    assert_eq!(key, ShareKey::of(&value));
    assert!(fs::read(store.file_path(&key)).unwrap() == value, "the file holds other bytes");
    assert_eq!(names(store.path()), vec![format!("{key}.bin")], "one file, no temporary file");
    // The same content, streamed or at once, gives the one file.
    assert_eq!(store.put_with(&mut writes_in_pieces(&value, 1 << 20)).unwrap(), key);
    assert_eq!(store.put(&value).unwrap(), key);
    assert_eq!(store.writes(), 1);
    assert_eq!(names(store.path()), vec![format!("{key}.bin")]);
    // Empty streams are values too.
    let empty = store.put_with(&mut |_| Ok(())).unwrap();
    assert_eq!(empty, ShareKey::of(b""));
    assert_eq!(store.len(), 2);
}

#[test]
fn a_failing_or_panicking_writer_leaves_no_file() {
    let store = DirStore::create(Some(&parent("stream-fail"))).unwrap();
    let value = vec![5u8; 5 << 20];
    let err = store
        .put_with(&mut |out| {
            out.write_all(&value).map_err(|e| Error::Store(e.to_string()))?;
            Err(Error::Store("the encoder gave up".into()))
        })
        .unwrap_err();
    assert!(store_message(Err::<(), _>(err)).contains("the encoder gave up"));
    assert_eq!(names(store.path()), Vec::<String>::new(), "a failed put leaves a file behind");
    assert!(store.is_empty());

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.put_with(&mut |out| {
            out.write_all(&value).map_err(|e| Error::Store(e.to_string()))?;
            panic!("the encoder panicked")
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(names(store.path()), Vec::<String>::new(), "a panicking put leaves a file behind");
    assert_eq!(store.writes(), 0);
    // The store still works.
    let key = store.put_with(&mut writes_in_pieces(&value, 1000)).unwrap();
    assert_eq!((*store.get(&key).unwrap()).as_ref(), &value[..]);
}

#[test]
fn a_streamed_put_into_a_read_only_view_is_an_error_and_writes_nothing() {
    let store = DirStore::create(Some(&parent("stream-view"))).unwrap();
    let view = DirStore::open(store.path()).unwrap();
    let mut called = false;
    let e = view
        .put_with(&mut |_| {
            called = true;
            Ok(())
        })
        .unwrap_err();
    assert!(store_message(Err::<(), _>(e)).contains("read-only"));
    assert!(!called, "the writer runs only when there is somewhere to write");
    assert_eq!(names(store.path()), Vec::<String>::new());
}

#[test]
fn concurrent_streamed_puts_of_the_same_bytes_leave_one_file() {
    let store = Arc::new(DirStore::create(Some(&parent("stream-race"))).unwrap());
    let value: Arc<Vec<u8>> = Arc::new((0..2_000_000u32).map(|i| (i % 241) as u8).collect());
    let barrier = Arc::new(Barrier::new(4));
    let keys: Vec<ShareKey> = (0..4)
        .map(|t| {
            let (store, value, barrier) = (Arc::clone(&store), Arc::clone(&value), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                store.put_with(&mut writes_in_pieces(&value, 1000 + t)).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]));
    assert_eq!(names(store.path()), vec![format!("{}.bin", keys[0])], "one file, no temporary file");
    assert!(fs::read(store.file_path(&keys[0])).unwrap() == *value);
}
