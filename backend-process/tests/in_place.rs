//! Plain-number batches on worker processes: cut by the driver straight into a worker's
//! shared ring, read there by the worker, outputs placed straight into the result. Every
//! result must be right and in input order whichever way a batch travels (the socket for
//! small ones, the ring from 32 KiB), whatever the item and output types, with failures
//! among the items, through ordered and unordered streams, and when a worker dies with
//! batches in its ring (they are retried from there on another worker).

use adparallelengine_core::{Batching, Engine, FailureKind};
use adparallelengine_process::ProcessBackend;

adparallelengine_core::task!(Double = |x: u64| -> u64 { x * 2 });
adparallelengine_core::task!(Widen = |x: u8| -> u64 { u64::from(x) << 40 });
adparallelengine_core::task!(Half = |x: f32| -> f64 { f64::from(x) / 2.0 });
adparallelengine_core::try_task!(
    /// Fails every item divisible by 7,919.
    NoPrimes = |x: u64| -> u32 {
        if x % 7_919 == 0 {
            return Err(format!("{x} is out").into());
        }
        Ok(x as u32)
    }
);
adparallelengine_core::task!(
    /// Kills its worker process at item 30,000 the first time it meets it (the claim file,
    /// named by the job's args, is made by whoever meets it first).
    DiesOnce = |x: u64, claim: &String| -> u64 {
        if x == 30_000 && std::fs::OpenOptions::new().write(true).create_new(true).open(claim).is_ok() {
            std::process::abort();
        }
        x + 1
    }
);

adparallelengine_core::task!(Triple = |x: i8| -> i16 { i16::from(x) * 3 });
adparallelengine_core::task!(Next = |x: u64| -> u64 { x.wrapping_add(1) });
adparallelengine_core::task!(Halve = |x: i128| -> i128 { x / 2 });
adparallelengine_core::task!(Index = |x: usize| -> u64 { x as u64 });
adparallelengine_core::task!(Named = |x: u32| -> String { format!("#{x}") });

fn engine() -> Engine<ProcessBackend> {
    Engine::from_backend(ProcessBackend::new(2).expect("backend"))
}

#[test]
fn plain_batches_come_back_right_and_in_order_whichever_way_they_travel() {
    let e = engine();
    let n = 200_000u64;
    let want: Vec<u64> = (0..n).map(|x| 2 * x).collect();
    // Auto (batches growing from 1 item), 5,000 items (40 KB: the ring), 100 (the socket),
    // and a batch size that does not divide the items.
    for b in [Batching::Auto, Batching::ChunkSize(5_000), Batching::ChunkSize(100), Batching::ChunkSize(65_537)] {
        assert_eq!(e.map(Double, 0..n).batched(b).run().unwrap(), want, "{b:?}");
    }
    // Items from a vector and from a generator without a length.
    let v: Vec<u64> = (0..n).collect();
    assert_eq!(e.map(Double, v.clone()).batched(Batching::ChunkSize(8_192)).run().unwrap(), want);
    let mut i = 0;
    let gen = std::iter::from_fn(|| (i < n).then(|| (i, i += 1).0));
    assert_eq!(e.map(Double, gen).batched(Batching::ChunkSize(8_192)).run().unwrap(), want);
    // Items and outputs of other sizes (1-byte items: batches from 32,768 items in the ring).
    let bytes: Vec<u8> = (0..100_000u32).map(|x| (x % 251) as u8).collect();
    let wide = e.map(Widen, bytes.clone()).batched(Batching::ChunkSize(40_000)).run().unwrap();
    assert_eq!(wide, bytes.iter().map(|&x| u64::from(x) << 40).collect::<Vec<_>>());
    let floats: Vec<f32> = (0..100_000).map(|x| x as f32 * 0.5).collect();
    let halves = e.map(Half, floats.clone()).batched(Batching::ChunkSize(9_000)).run().unwrap();
    assert_eq!(halves, floats.iter().map(|&x| f64::from(x) / 2.0).collect::<Vec<_>>());
    // Streams, where nothing is placed: outputs are decoded from the ring.
    let streamed: Vec<u64> =
        e.map(Double, 0..n).batched(Batching::ChunkSize(5_000)).stream().unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(streamed, want);
    let mut unordered: Vec<(usize, u64)> = e
        .map(Double, 0..n)
        .batched(Batching::ChunkSize(5_000))
        .stream_unordered()
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, want.iter().copied().enumerate().collect::<Vec<_>>(), "each output with its index");
}

/// A job over a range sends each batch as its first item and length; the worker makes the
/// items. Every integer type, both kinds of range, the ends of a type's values, outputs that
/// are not plain numbers (the general worker loop), and batches of every size must come back
/// right.
#[test]
fn batches_of_a_range_come_back_right_for_every_integer_type_up_to_its_ends() {
    let e = engine();
    for b in [Batching::Auto, Batching::ChunkSize(7), Batching::ChunkSize(100)] {
        let got = e.map(Triple, -128i8..=127).batched(b).run().unwrap();
        assert_eq!(got, (-128i16..=127).map(|x| x * 3).collect::<Vec<_>>(), "{b:?}");
        let top = e.map(Next, u64::MAX - 1_000..=u64::MAX).batched(b).run().unwrap();
        assert_eq!(top, (u64::MAX - 1_000..=u64::MAX).map(|x| x.wrapping_add(1)).collect::<Vec<_>>(), "{b:?}");
    }
    let halves = e.map(Halve, -70_000i128..70_000).batched(Batching::ChunkSize(9_000)).run().unwrap();
    assert_eq!(halves, (-70_000i128..70_000).map(|x| x / 2).collect::<Vec<_>>());
    let idx = e.map(Index, 0usize..=99_999).batched(Batching::Auto).run().unwrap();
    assert_eq!(idx, (0..=99_999u64).collect::<Vec<_>>());
    let named = e.map(Named, 5u32..20_005).batched(Batching::ChunkSize(1_000)).run().unwrap();
    assert_eq!(named, (5u32..20_005).map(|x| format!("#{x}")).collect::<Vec<_>>());
    // Empty and one-item ranges.
    assert!(e.map(Next, 3u64..3).run().unwrap().is_empty());
    assert_eq!(e.map(Next, 3u64..=3).run().unwrap(), vec![4]);
    // A declared length the range does not have is an error, as for any iterator.
    let err = e.map(Next, 0u64..10).length(12).run().unwrap_err();
    assert!(matches!(err, adparallelengine_core::Error::LengthMismatch { .. }), "{err}");
}

#[test]
fn failures_among_plain_items_name_their_items_and_the_rest_is_right() {
    let e = engine();
    let n = 100_000u64;
    let got = e.map(NoPrimes, 0..n).batched(Batching::ChunkSize(10_000)).collect_results().unwrap();
    assert_eq!(got.len(), n as usize);
    for (i, r) in got.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(u64::from(v), i as u64),
            Err(f) => {
                assert_eq!(f.index, i);
                assert_eq!(f.kind, FailureKind::Error);
                assert!(i as u64 % 7_919 == 0 && f.message.contains("is out"), "{f:?}");
            }
        }
    }
    // `run` stops at the first failure to come back (whichever worker's batch is first: not
    // always the lowest index), and says which.
    let err = e.map(NoPrimes, 1..n).batched(Batching::ChunkSize(10_000)).run().unwrap_err();
    let f = match &err {
        adparallelengine_core::Error::Item(f) => f,
        other => panic!("expected an item's failure, got {other}"),
    };
    let item = f.index as u64 + 1;
    assert!(item % 7_919 == 0 && f.message.contains(&format!("{item} is out")), "{err}");
}

#[test]
fn batches_in_a_dead_workers_ring_are_retried_on_another_and_every_result_is_right() {
    let claim = std::env::temp_dir().join(format!("adpe-in-place-dies-{}", std::process::id()));
    let _ = std::fs::remove_file(&claim);
    let e = engine();
    let n = 100_000u64;
    // Items from a vector are cut into the ring; a range's batches travel as their first
    // item (and are split into single items to retry just the same).
    let items: Vec<u64> = (0..n).collect();
    let by_vec = e.map(DiesOnce, items).args(claim.to_string_lossy().into_owned()).batched(Batching::ChunkSize(5_000));
    let got = by_vec.run().unwrap();
    assert!(claim.exists(), "a worker died");
    std::fs::remove_file(&claim).unwrap();
    assert_eq!(got, (1..=n).collect::<Vec<_>>());
    let by_range = e.map(DiesOnce, 0..n).args(claim.to_string_lossy().into_owned()).batched(Batching::ChunkSize(5_000));
    let got = by_range.run().unwrap();
    assert!(claim.exists(), "a worker died");
    std::fs::remove_file(&claim).unwrap();
    assert_eq!(got, (1..=n).collect::<Vec<_>>());
    // The engine goes on.
    assert_eq!(e.map(Double, 0..50_000u64).batched(Batching::ChunkSize(5_000)).run().unwrap().len(), 50_000);
}
