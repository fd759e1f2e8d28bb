//! Arrow IPC files through the store: decoded from the mapped file without copying columns.
#![cfg(feature = "arrow")]

use adparallelengine_core::ShareKey;
use adparallelengine_core::{Error, SharedBytes, SharedStore};
use adparallelengine_store::arrow::{map_ipc_file, to_ipc_file, write_ipc_file};
use adparallelengine_store::{DirStore, MemoryStore};
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use std::ops::Range;
use std::sync::Arc;

/// 1 Mi values of 8 bytes: 8 MiB per column.
const ROWS: usize = 1 << 20;

fn big_batch() -> RecordBatch {
    let ints: ArrayRef = Arc::new(Int64Array::from_iter_values((0..ROWS as i64).map(|i| i * 3 - 7)));
    let floats: ArrayRef = Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| i as f64 * 0.5 + 0.25)));
    RecordBatch::try_from_iter([("ints", ints), ("floats", floats)]).unwrap()
}

/// The address range of the bytes.
fn range(bytes: &SharedBytes) -> Range<usize> {
    let s = (**bytes).as_ref();
    s.as_ptr() as usize..s.as_ptr() as usize + s.len()
}

/// Asserts that every buffer of every column lies inside `file`: nothing was copied.
fn assert_inside(batch: &RecordBatch, file: &Range<usize>) {
    for (i, col) in batch.columns().iter().enumerate() {
        let data = col.to_data();
        for (j, buf) in data.buffers().iter().enumerate() {
            let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
            assert!(
                file.start <= start && end <= file.end,
                "column {i} buffer {j} at {start:#x}..{end:#x} is not inside the file \
                 {:#x}..{:#x}: it was copied",
                file.start,
                file.end
            );
        }
    }
}

#[test]
fn an_8_mib_column_is_decoded_from_the_mapped_file_without_copy() {
    let batch = big_batch();
    let file = to_ipc_file(std::slice::from_ref(&batch)).unwrap();
    assert!(file.len() > 2 * ROWS * 8);

    let store = DirStore::create(None).unwrap();
    let key = store.put(&file).unwrap();
    drop(file);
    // What a worker process does.
    let view = DirStore::open(store.path()).unwrap();
    let bytes = view.get(&key).unwrap();
    let mapped = range(&bytes);
    let back = map_ipc_file(bytes.clone()).unwrap();

    // (a) the values are equal
    assert_eq!(back.len(), 1);
    assert_eq!(back[0], batch);
    // (b) the columns' data pointers lie inside the mapped file: no copy
    let ints = back[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let floats = back[0].column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    for ptr in [
        ints.values().as_ptr() as usize,
        floats.values().as_ptr() as usize,
        back[0].column(0).to_data().buffers()[0].as_ptr() as usize,
    ] {
        assert!(mapped.contains(&ptr), "{ptr:#x} not in {mapped:x?}");
    }
    assert!(mapped.contains(&(ints.values().as_ptr() as usize + ROWS * 8 - 1)));
    assert_inside(&back[0], &mapped);
    assert_eq!(ints.value(ROWS - 1), (ROWS as i64 - 1) * 3 - 7);
    assert_eq!(floats.value(12), 6.25);
}

#[test]
fn decoded_batches_outlive_the_bytes_the_view_and_the_store() {
    let batch = big_batch();
    let store = DirStore::create(None).unwrap();
    let key = store.put(&to_ipc_file(std::slice::from_ref(&batch)).unwrap()).unwrap();
    let back = map_ipc_file(store.get(&key).unwrap()).unwrap();
    let dir = store.path().to_path_buf();
    drop(store); // removes the directory; the mapping keeps the data
    assert!(!dir.exists());
    assert_eq!(back[0], batch);
    let sum: i64 = back[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().iter().sum();
    assert_eq!(sum, (0..ROWS as i64).map(|i| i * 3 - 7).sum::<i64>());
}

#[test]
fn several_batches_strings_nulls_and_dictionaries_round_trip_without_copy() {
    let make = |offset: i64| {
        let ints: ArrayRef = Arc::new(Int64Array::from_iter((0..100).map(|i| (i % 7 != 0).then_some(i + offset))));
        let strings: ArrayRef =
            Arc::new(StringArray::from_iter((0..100).map(|i| (i % 5 != 0).then(|| format!("s{}", i + offset)))));
        let dict: ArrayRef =
            Arc::new(DictionaryArray::<Int32Type>::from_iter((0..100).map(|i| ["a", "b", "c"][i % 3])));
        RecordBatch::try_from_iter([("i", ints), ("s", strings), ("d", dict)]).unwrap()
    };
    let batches = vec![make(0), make(1000), make(-5)];
    let store = DirStore::create(None).unwrap();
    let key = store.put(&to_ipc_file(&batches).unwrap()).unwrap();
    let bytes = store.get(&key).unwrap();
    let mapped = range(&bytes);
    let back = map_ipc_file(bytes).unwrap();
    assert_eq!(back, batches);
    for b in &back {
        // Ints (validity + values) and strings (validity + offsets + bytes) are the file's.
        for col in [b.column(0), b.column(1)] {
            for buf in col.to_data().buffers() {
                assert!(mapped.contains(&(buf.as_ptr() as usize)));
            }
            let nulls = col.nulls().unwrap();
            assert!(mapped.contains(&(nulls.buffer().as_ptr() as usize)));
        }
    }
}

#[test]
fn bytes_from_a_memory_store_decode_too() {
    let batch = big_batch();
    let store = MemoryStore::default();
    let key = store.put(&to_ipc_file(std::slice::from_ref(&batch)).unwrap()).unwrap();
    let back = map_ipc_file(store.get(&key).unwrap()).unwrap();
    assert_eq!(back, vec![batch]);
}

#[test]
fn a_batch_of_no_rows_round_trips() {
    let ints: ArrayRef = Arc::new(Int64Array::from(Vec::<i64>::new()));
    let batch = RecordBatch::try_from_iter([("x", ints)]).unwrap();
    let store = DirStore::create(None).unwrap();
    let key = store.put(&to_ipc_file(std::slice::from_ref(&batch)).unwrap()).unwrap();
    assert_eq!(map_ipc_file(store.get(&key).unwrap()).unwrap(), vec![batch]);
}

fn store_message<T>(r: adparallelengine_core::Result<T>) -> String {
    match r {
        Err(Error::Store(m)) => m,
        Err(other) => panic!("expected Error::Store, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn writing_no_batch_or_mixed_schemas_is_an_error() {
    let e = store_message(to_ipc_file(&[]));
    assert!(e.contains("no batch"), "{e}");
    let a: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    let b: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
    let e = store_message(to_ipc_file(&[
        RecordBatch::try_from_iter([("x", a)]).unwrap(),
        RecordBatch::try_from_iter([("x", b)]).unwrap(),
    ]));
    assert!(e.contains("batch 1") && e.contains("schema"), "{e}");
}

#[test]
fn bytes_that_are_not_an_ipc_file_are_an_error_not_a_panic() {
    let good = to_ipc_file(&[big_batch().slice(0, 1000)]).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"definitely not an arrow file at all".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("no trailer", good[..good.len() - 1].to_vec()),
        ("stream format", adparallelengine_core::arrow::to_ipc(&big_batch().slice(0, 10)).unwrap()),
        ("bad leading magic", {
            let mut v = good.clone();
            v[0] = b'X';
            v
        }),
        ("huge footer length", {
            let mut v = good.clone();
            let n = v.len();
            v[n - 10..n - 6].copy_from_slice(&(i32::MAX).to_le_bytes());
            v
        }),
    ];
    for (what, bytes) in cases {
        let e = store_message(map_ipc_file(Arc::new(bytes) as SharedBytes));
        assert!(!e.is_empty(), "{what}");
    }
}

#[test]
fn a_streamed_put_writes_the_in_memory_encoding_byte_for_byte_and_maps_back() {
    let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::from_iter((0..1000).map(|i| ["a", "b", "c"][i % 3])));
    let strings: ArrayRef = Arc::new(StringArray::from_iter((0..1000).map(|i| (i % 5 != 0).then(|| format!("s{i}")))));
    let cases: Vec<(&str, Vec<RecordBatch>)> = vec![
        ("16 MiB batch", vec![big_batch()]),
        // A slice: Arrow's writer cuts its buffers (and copies offset buffers) as it goes.
        ("sliced batch", vec![big_batch().slice(12_345, 300_000)]),
        ("strings and a dictionary", vec![RecordBatch::try_from_iter([("s", strings), ("d", dict)]).unwrap(); 3]),
    ];
    let store = DirStore::create(None).unwrap();
    for (what, batches) in cases {
        let in_memory = to_ipc_file(&batches).unwrap();
        let key = store.put_with(&mut |out| write_ipc_file(&batches, out)).unwrap();
        assert_eq!(key, ShareKey::of(&in_memory), "{what}");
        let on_disk = std::fs::read(store.file_path(&key)).unwrap();
        assert!(on_disk == in_memory, "{what}: the streamed file differs from the in-memory encoding");
        let bytes = store.get(&key).unwrap();
        let mapped = range(&bytes);
        let back = map_ipc_file(bytes).unwrap();
        assert_eq!(back, batches, "{what}");
        if what == "16 MiB batch" {
            assert_inside(&back[0], &mapped);
        }
        // The same table again: one file.
        assert_eq!(store.put_with(&mut |out| write_ipc_file(&batches, out)).unwrap(), key);
    }
    assert_eq!(store.len(), 3);
    assert_eq!(store.writes(), 3, "a second put of the same table writes no file");
}

#[test]
fn a_streamed_put_of_no_batch_is_an_error_and_leaves_no_file() {
    let store = DirStore::create(None).unwrap();
    let e = store_message(store.put_with(&mut |out| write_ipc_file(&[], out)));
    assert!(e.contains("no batch"), "{e}");
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0);
}
