//! `Shared` values on worker processes: written once under `path_shared`, Arrow data mapped
//! zero-copy by workers, files private, and removed with the engine.

mod common;

use adparallelengine::arrow::Frame;
use adparallelengine::{try_task, AnyBackend, Engine, Kind, Progress, Shared};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
struct TableArgs {
    table: Shared<Frame>,
    scale: Shared<Vec<f64>>,
}

/// What a worker saw of the shared table.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Seen {
    sum: f64,
    scale: f64,
    /// Whether the column's bytes are inside a mapping of a file of the share store (read
    /// from /proc/self/maps): zero-copy.
    mapped_from_store: bool,
    pid: u32,
}

fn in_store_mapping(addr: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return false };
    maps.lines().any(|l| {
        let mut parts = l.split_whitespace();
        let range = parts.next().unwrap_or("");
        let path = l.split_whitespace().nth(5).unwrap_or("");
        let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
        let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
        let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
        lo <= addr && addr < hi && path.contains("adparallelengine-") && path.ends_with(".bin")
    })
}

try_task!(
    SumColumn = |col: usize, args: &TableArgs| -> Seen {
        let c = args.table.column(col).as_any().downcast_ref::<Float64Array>().ok_or("not f64")?;
        let addr = c.values().as_ptr() as usize;
        Ok(Seen {
            sum: c.values().iter().sum::<f64>() * args.scale[col],
            scale: args.scale[col],
            mapped_from_store: in_store_mapping(addr),
            pid: std::process::id(),
        })
    }
);

fn table(rows: usize) -> Frame {
    let a: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)));
    let b: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|_| 1.0)));
    Frame(RecordBatch::try_from_iter([("a", a), ("b", b)]).unwrap())
}

fn share_dir(e: &Engine) -> Option<PathBuf> {
    match e.backend() {
        AnyBackend::Process(p) => p.share_dir(),
        _ => None,
    }
}

#[test]
fn shared_arrow_tables_are_mapped_zero_copy_written_once_and_removed() {
    let parent = std::env::temp_dir().join(format!("adpe-share-test-{}", std::process::id()));
    let e =
        Engine::builder(Kind::Process).max_workers(2).path_shared(&parent).progress(Progress::quiet()).build().unwrap();
    let rows = 1 << 20; // two columns of 8 MiB
    let args = || TableArgs { table: Shared::new(table(rows)), scale: Shared::new(vec![2.0, 3.0]) };
    let t = args();
    let a = TableArgs { table: t.table.clone(), scale: t.scale.clone() };
    let seen = e.map(SumColumn, [0usize, 1, 0, 1]).args(a).batched(false).run().unwrap();
    let n = rows as f64;
    for (i, s) in seen.iter().enumerate() {
        let want = if i % 2 == 0 { 2.0 * n * (n - 1.0) / 2.0 } else { 3.0 * n };
        assert_eq!(s.sum, want, "item {i}");
        assert!(s.mapped_from_store, "item {i}: the worker copied the shared column");
        assert_ne!(s.pid, std::process::id());
    }
    let dir = share_dir(&e).expect("a share store directory");
    assert!(dir.starts_with(&parent));
    let files = || std::fs::read_dir(&dir).unwrap().count();
    let before = files();
    assert_eq!(before, 3, "the table as an Arrow IPC file, the Shared<Frame> pointing at it, the scale vector");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?}", f.path());
        }
    }
    // The same values in another job: nothing new is written.
    let again = e.map(SumColumn, [1usize]).args(TableArgs { table: t.table.clone(), scale: t.scale.clone() }).run();
    assert_eq!(again.unwrap()[0].sum, 3.0 * n);
    assert_eq!(files(), before);
    // A different table under the same name is new content: a new file, never the old data.
    let other = args();
    let s = e.map(SumColumn, [1usize]).args(TableArgs { table: Shared::new(table(10)), scale: other.scale }).run();
    assert_eq!(s.unwrap()[0].sum, 30.0);
    assert!(files() > before);
    drop(e);
    assert!(!dir.exists(), "the share store outlived its engine");
    let _ = std::fs::remove_dir_all(&parent);
}
