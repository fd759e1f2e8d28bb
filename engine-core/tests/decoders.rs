//! Every decoder a peer reaches, fed whatever a stranger or a broken peer might send: the
//! driver's reading of worker answers (`hear`), the worker's serve loop (`serve_connection`),
//! the knock and the framing. None may panic, spin, or allocate past its frame bound; each
//! answers with an error (or a refusal) instead. Property tests with a fixed case count, so the
//! run is bounded in CI (set `PROPTEST_CASES` for a longer hunt).

use adparallelengine_core::remote::{
    check_knock, encode_msg, fingerprint, hear, read_frame_into, serve_connection, split_frame, FromWorker, Heard,
    Incoming, Secret, SentBatches, ToWorker, Transport,
};
use adparallelengine_core::{Error, ItemError, Result, SharedStore};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// A worker's transport that plays `frames` as what the driver sent, and keeps what the
/// worker answers.
struct Played {
    frames: std::vec::IntoIter<Vec<u8>>,
    current: Vec<u8>,
    answers: usize,
}

impl Transport for Played {
    fn send(&mut self, _head: &[u8], _tail: &[u8]) -> std::io::Result<()> {
        self.answers += 1;
        Ok(())
    }
    fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
        match self.frames.next() {
            Some(f) => {
                self.current = f;
                Ok(Some(Incoming { payload: &self.current, bulk: None }))
            }
            None => Ok(None),
        }
    }
}

fn no_store(_: &str) -> Result<Arc<dyn SharedStore>> {
    Err(Error::Store("no store".into()))
}

fn no_local() -> Result<Arc<dyn SharedStore>> {
    Err(Error::Store("no store".into()))
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes as a worker's answer: never a panic, never an event the driver acts on as
    /// a finished batch unless it fits what was sent.
    #[test]
    fn hear_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let sent = SentBatches::default();
        sent.record(0, 0, 4);
        let heard = hear::<u64>(0, Incoming { payload: &bytes, bulk: None }, None, Some(&sent));
        if let Heard::Event(adparallelengine_core::plumbing::Event::Done(b)) = heard {
            prop_assert_eq!((b.seq, b.start, b.len), (0, 0, 4));
            prop_assert!(b.outputs.len() + b.failures.len() <= 4);
        }
    }

    /// A well-formed `Done` with any numbers in it: accepted only when it answers the batch
    /// sent, exactly, and fits it; then it decodes no more outputs than the batch has items.
    #[test]
    fn hear_accepts_only_answers_that_fit_the_batch_sent(
        seq in 0u64..4,
        start in prop_oneof![Just(0usize), Just(1), Just(usize::MAX - 2), any::<usize>()],
        len in prop_oneof![Just(4usize), Just(3), Just(1 << 28), any::<usize>()],
        count in prop_oneof![Just(4usize), Just(5), Just(1 << 28), any::<usize>()],
        failed in proptest::collection::vec(any::<usize>(), 0..3),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let sent = SentBatches::default();
        sent.record(1, 0, 4);
        let failures = failed
            .into_iter()
            .map(|index| ItemError { index, kind: adparallelengine_core::FailureKind::Error, message: String::new() })
            .collect();
        let done = FromWorker::Done { seq, start, len, count, failures, busy: Duration::ZERO, item_stats: None };
        let mut frame = encode_msg(&done).expect("encodes");
        frame.extend_from_slice(&tail);
        match hear::<u64>(0, Incoming { payload: &frame, bulk: None }, None, Some(&sent)) {
            Heard::Event(adparallelengine_core::plumbing::Event::Done(b)) => {
                prop_assert_eq!((b.seq, b.start, b.len), (1, 0, 4));
                prop_assert!(b.outputs.len() + b.failures.len() <= 4);
            }
            Heard::Misbehaved(_) => {}
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Random frames as what a driver sends a worker: the serve loop ends (with an error or
    /// not) and never panics.
    #[test]
    fn serve_connection_survives_any_frames(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..6),
        hello_first in any::<bool>(),
    ) {
        let mut all = Vec::new();
        if hello_first {
            all.push(encode_msg(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: 0 }).expect("encodes"));
        }
        all.extend(frames);
        let mut t = Played { frames: all.into_iter(), current: Vec::new(), answers: 0 };
        let _ = serve_connection(&mut t, &no_store, &no_local);
        prop_assert!(t.answers <= 64);
    }

    /// Random bytes as a knock: refused (or, by a one-in-2^256 chance, accepted), never a panic.
    #[test]
    fn the_knock_refuses_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let secret = Secret::random().expect("a secret");
        let mut r = &bytes[..];
        let mut got = Vec::new();
        prop_assert!(!matches!(check_knock(&mut r, &secret, &mut got), Ok(Some(_))));
        prop_assert!(got.len() <= 2048, "{} bytes kept", got.len());
    }

    /// Any bytes as a frame: read within its bound or refused; the buffer never grows past it.
    #[test]
    fn frames_are_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
        let mut buf = Vec::new();
        let mut r = &bytes[..];
        if let Ok(Some(_)) = read_frame_into(&mut r, max, &mut buf) {
            prop_assert!(buf.len() <= max);
            let _ = split_frame::<FromWorker>(&buf);
        }
    }
}
