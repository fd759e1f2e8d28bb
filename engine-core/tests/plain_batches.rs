//! Batches of plain numbers read in place: a worker reads a batch's items where they arrived
//! and answers from one output vector per job; a driver places plain outputs straight into
//! the result. Neither believes the other: a batch whose bytes are not its items (short,
//! long, forged count) fails its first item on the worker, and an answer whose bytes are not
//! its outputs is refused by the driver, which then places and decodes nothing.

use adparallelengine_core::plumbing::Placement;
use adparallelengine_core::remote::testing::job_spec;
use adparallelengine_core::remote::{
    encode_msg, fingerprint, hear, serve_connection, split_frame, FromWorker, Heard, Incoming, SentBatches, ToWorker,
    Transport,
};
use adparallelengine_core::{Error, Result, SharedStore};
use std::sync::Arc;
use std::time::Duration;

adparallelengine_core::task!(Triple = |x: u64| -> u64 { 3 * x });

/// A worker's transport that plays `frames` as what the driver sent (the tail of each in
/// the frame or, with `apart`, beside it as a transport's shared memory would hold it), and
/// keeps what the worker answers: each head and tail.
struct Played {
    frames: std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>,
    current: (Vec<u8>, Option<Vec<u8>>),
    answers: Vec<(FromWorker, Vec<u8>)>,
}

impl Transport for Played {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> std::io::Result<()> {
        let (msg, rest) = split_frame::<FromWorker>(head).map_err(std::io::Error::other)?;
        assert!(rest.is_empty());
        self.answers.push((msg, tail.to_vec()));
        Ok(())
    }
    fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
        let Some(f) = self.frames.next() else { return Ok(None) };
        self.current = f;
        Ok(Some(Incoming { payload: &self.current.0, bulk: self.current.1.as_deref() }))
    }
}

fn no_store(_: &str) -> Result<Arc<dyn SharedStore>> {
    Err(Error::Store("no store".into()))
}

fn no_local() -> Result<Arc<dyn SharedStore>> {
    Err(Error::Store("no store".into()))
}

fn bytes_of(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn batch(seq: u64, start: usize, count: usize, tail: &[u8], apart: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut head = encode_msg(&ToWorker::Batch { seq, start, count }).unwrap();
    if apart {
        return (head, Some(tail.to_vec()));
    }
    head.extend_from_slice(tail);
    (head, None)
}

#[test]
fn a_worker_reads_plain_items_in_place_and_fails_a_batch_whose_bytes_are_not_its_items() {
    for apart in [false, true] {
        let mut frames = vec![
            (encode_msg(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: 0 }).unwrap(), None),
            (encode_msg(&ToWorker::Job(job_spec::<Triple>(false))).unwrap(), None),
        ];
        frames.push(batch(0, 0, 3, &bytes_of(&[1, 2, 3]), apart));
        // Short: 3 items announced, 2 and a half sent.
        frames.push(batch(1, 3, 3, &bytes_of(&[4, 5, 6])[..20], apart));
        // Long: a count lower than the items sent.
        frames.push(batch(2, 6, 1, &bytes_of(&[7, 8]), apart));
        // A count whose bytes would overflow.
        frames.push(batch(3, 7, usize::MAX, &bytes_of(&[9]), apart));
        frames.push(batch(4, 8, 2, &bytes_of(&[10, 11]), apart));
        frames.push((encode_msg(&ToWorker::EndJob).unwrap(), None));
        let mut t = Played { frames: frames.into_iter(), current: Default::default(), answers: vec![] };
        serve_connection(&mut t, &no_store, &no_local).unwrap();
        let a = &t.answers;
        assert!(matches!(a[0].0, FromWorker::Hello { .. }) && matches!(a[1].0, FromWorker::Ready), "{a:?}");
        let done = |i: usize| match &a[i] {
            (FromWorker::Done { seq, start, len, count, failures, .. }, tail) => (
                *seq,
                *start,
                *len,
                *count,
                failures.iter().map(|f| f.index).collect::<Vec<_>>(),
                tail.clone(),
                failures,
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!((done(2).3, done(2).5), (3, bytes_of(&[3, 6, 9])), "read in place, in order");
        for (i, (seq, start, len)) in [(3, (1, 3, 3)), (4, (2, 6, 1)), (5, (3, 7, usize::MAX))] {
            let (s, st, l, count, failed, tail, failures) = done(i);
            assert_eq!((s, st, l, count, failed, tail.len()), (seq, start, len, 0, vec![start], 0), "apart {apart}");
            assert!(failures[0].message.contains("cannot decode the batch's items"), "{:?}", failures[0]);
        }
        assert_eq!((done(6).3, done(6).5), (2, bytes_of(&[30, 33])), "the job goes on");
        assert!(matches!(a[7].0, FromWorker::JobEnded) && a.len() == 8, "{a:?}");
    }
}

fn done_frame(seq: u64, start: usize, len: usize, count: usize, tail: &[u8]) -> Vec<u8> {
    let mut f = encode_msg(&FromWorker::Done {
        seq,
        start,
        len,
        count,
        failures: vec![],
        busy: Duration::ZERO,
        item_stats: None,
    })
    .unwrap();
    f.extend_from_slice(tail);
    f
}

#[test]
fn a_driver_places_plain_outputs_only_when_their_bytes_are_exactly_the_batch() {
    let placement = Placement::<u64>::new(8).unwrap();
    let sent = SentBatches::default();
    sent.record(0, 0, 4);
    // Short: four outputs announced, three sent.
    let f = done_frame(0, 0, 4, 4, &bytes_of(&[1, 2, 3]));
    match hear::<u64>(0, Incoming { payload: &f, bulk: None }, Some(&placement), Some(&sent)) {
        Heard::Misbehaved(why) => assert!(why.contains("cannot decode its outputs"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!placement.was_written(0, 4), "nothing placed");
    // Long: five outputs' bytes for four.
    sent.record(0, 0, 4);
    let f = done_frame(0, 0, 4, 4, &bytes_of(&[1, 2, 3, 4, 5]));
    assert!(matches!(
        hear::<u64>(0, Incoming { payload: &f, bulk: None }, Some(&placement), Some(&sent)),
        Heard::Misbehaved(_)
    ));
    // Beside the frame (a transport's shared memory), the same.
    sent.record(0, 0, 4);
    let f = done_frame(0, 0, 4, 4, &[]);
    let short = bytes_of(&[1, 2]);
    assert!(matches!(
        hear::<u64>(0, Incoming { payload: &f, bulk: Some(&short) }, Some(&placement), Some(&sent)),
        Heard::Misbehaved(_)
    ));
    // More outputs than the batch has items, whatever the bytes.
    sent.record(0, 0, 4);
    let f = done_frame(0, 0, 4, 5, &bytes_of(&[1, 2, 3, 4, 5]));
    assert!(matches!(
        hear::<u64>(0, Incoming { payload: &f, bulk: None }, Some(&placement), Some(&sent)),
        Heard::Misbehaved(_)
    ));
    // Past the end of the result: not placed, but decoded (the engine then refuses the batch).
    sent.record(1, 6, 4);
    let whole = bytes_of(&[7, 8, 9, 10]);
    let f = done_frame(1, 6, 4, 4, &[]);
    match hear::<u64>(0, Incoming { payload: &f, bulk: Some(&whole) }, Some(&placement), Some(&sent)) {
        Heard::Event(adparallelengine_core::plumbing::Event::Done(b)) => {
            assert!(!b.placed);
            assert_eq!(b.outputs, vec![7, 8, 9, 10]);
        }
        other => panic!("{other:?}"),
    }
    // Right: placed, nothing decoded.
    sent.record(2, 0, 4);
    let f = done_frame(2, 0, 4, 4, &[]);
    let right = bytes_of(&[2, 4, 6, 8]);
    match hear::<u64>(0, Incoming { payload: &f, bulk: Some(&right) }, Some(&placement), Some(&sent)) {
        Heard::Event(adparallelengine_core::plumbing::Event::Done(b)) => assert!(b.placed && b.outputs.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(placement.was_written(0, 4));
}
