//! For tests that play a driver or a worker by hand: a job's spec, a reader of a worker's
//! answers, and a worker that forges its answers ([`serve_lying`]), for the tests that prove a
//! driver believes no worker, whatever connects it (a socket pair, a pod's TCP connection, an
//! MPI rank). With the `testing` feature (which `conformance` turns on).

use crate::remote::wire::{decode_items, encode_items, encode_msg, read_frame_into, split_frame, ByteBuf};
use crate::remote::{fingerprint, FromWorker, JobSpec, ToWorker, Transport};
use crate::Task;
use std::io::Read;
use std::time::Duration;

/// The spec of a job of `T` with unit args and init.
pub fn job_spec<T: Task>(shipped: bool) -> JobSpec {
    JobSpec {
        task: T::name().to_string(),
        args: ByteBuf(encode_msg(&()).unwrap_or_default()),
        init: ByteBuf(encode_msg(&()).unwrap_or_default()),
        fail_fast: true,
        item_stats: false,
        retry_errors: Default::default(),
        share_dir: None,
        shipped,
    }
}

/// Reads a worker's messages up to its `JobEnded` (or the end of the stream), with the
/// outputs of each `Done` decoded as `u64`.
pub fn read_until_job_ended(r: &mut impl Read) -> Vec<(FromWorker, Vec<u64>)> {
    let (mut buf, mut heard) = (Vec::new(), vec![]);
    while let Ok(Some(false)) = read_frame_into(r, 1 << 20, &mut buf) {
        let Ok((msg, tail)) = split_frame::<FromWorker>(&buf) else { break };
        let outputs = match &msg {
            FromWorker::Done { count, .. } => decode_items::<u64>(tail, *count).unwrap_or_default(),
            _ => vec![],
        };
        let ended = matches!(msg, FromWorker::JobEnded);
        heard.push((msg, outputs));
        if ended {
            break;
        }
    }
    heard
}

/// Whether `heard` is a whole job: the handshake's answer, `Ready`, one `Done` with `outputs`,
/// and `JobEnded`.
pub fn is_one_job(heard: &[(FromWorker, Vec<u64>)], outputs: &[u64]) -> bool {
    matches!(
        heard,
        [(FromWorker::Hello { .. }, _), (FromWorker::Ready, _), (FromWorker::Done { .. }, o), (FromWorker::JobEnded, _)]
            if o == outputs
    )
}

/// How a worker played by [`serve_lying`] lies. Each forged answer is one a peer holding the
/// run's secret could send; a driver must stop that worker and use none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Each `Done` says its batch starts one item later than it does.
    ShiftedStart,
    /// Each `Done` carries three outputs more than its batch has items.
    CountTooHigh,
    /// Each `Done` names a batch never sent (its own sequence number plus 1,000).
    UnknownSeq,
    /// Each `Done` is sent twice (the first is right).
    Repeated,
    /// Each `Done` claims 2^28 items and as many outputs, with no bytes: `()` outputs
    /// would decode from nothing, so a driver that believed it would spin on them.
    HugeUnitCount,
    /// Not a forged answer: another build of the program, which refuses at the handshake.
    OtherBuild,
}

impl Lie {
    /// Every forged answer (all but [`Lie::OtherBuild`]).
    pub const FORGED: [Lie; 5] =
        [Lie::ShiftedStart, Lie::CountTooHigh, Lie::UnknownSeq, Lie::Repeated, Lie::HugeUnitCount];

    /// Words that the driver's reason for stopping a worker that lies so contains (what
    /// [`hear`](crate::remote::hear) says of it).
    pub fn complaint(self) -> &'static str {
        match self {
            Lie::ShiftedStart | Lie::UnknownSeq | Lie::HugeUnitCount => "but its oldest batch is",
            Lie::CountTooHigh => "output(s) and 0 failure(s) for",
            Lie::Repeated => "it answered batch",
            Lie::OtherBuild => "another build of the program",
        }
    }
}

/// What a worker played by [`serve_lying`] was sent before the driver closed its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lied {
    /// Batches it was sent.
    pub batches: usize,
    /// Jobs the driver ended in good order on it (`EndJob`): a driver that caught it sends none.
    pub job_ends: usize,
}

/// Plays a worker that lies as `lie` says, over `t`, until the driver closes the connection
/// (or it fails): the handshake answered as this build (as another for [`Lie::OtherBuild`],
/// which then returns), `Ready` to each job, `JobEnded` to each job's end, and to each batch
/// of `u64` items a `Done` forged from the right one (the outputs of a doubling task, `2 * x`).
pub fn serve_lying(t: &mut dyn Transport, lie: Lie) -> Lied {
    let mut lied = Lied::default();
    loop {
        // The answer to the message heard: (head, tail), or the end.
        let answer: Option<Vec<(FromWorker, Vec<u8>)>> = match t.recv() {
            Ok(Some(incoming)) => match incoming.split::<ToWorker>() {
                Ok((msg, tail)) => answer(msg, tail, lie, &mut lied),
                Err(_) => None,
            },
            Ok(None) | Err(_) => None,
        };
        let Some(answer) = answer else { return lied };
        for (msg, tail) in answer {
            let Ok(head) = encode_msg(&msg) else { return lied };
            if t.send(&head, &tail).is_err() {
                return lied;
            }
            if matches!(msg, FromWorker::Refused { .. }) {
                return lied;
            }
        }
    }
}

/// What the liar answers `msg`; `None` to hang up.
fn answer(msg: ToWorker, tail: &[u8], lie: Lie, lied: &mut Lied) -> Option<Vec<(FromWorker, Vec<u8>)>> {
    let done = |seq, start, len, count| FromWorker::Done {
        seq,
        start,
        len,
        count,
        failures: Vec::new(),
        busy: Duration::ZERO,
        item_stats: None,
    };
    let bytes = |v: &[u64]| encode_items(v).map(|c| c.into_owned()).ok();
    let is_range = matches!(msg, ToWorker::Range { .. });
    Some(match msg {
        ToWorker::Hello { fingerprint: theirs, .. } if lie == Lie::OtherBuild => {
            let reason = format!(
                "worker runs another build of the program (worker build-id-0ther, driver {theirs}): \
                 rebuild and deploy the same binary"
            );
            vec![(FromWorker::Refused { reason }, Vec::new())]
        }
        ToWorker::Hello { .. } => {
            vec![(FromWorker::Hello { fingerprint: fingerprint().to_string(), pid: std::process::id() }, Vec::new())]
        }
        ToWorker::Job(_) => vec![(FromWorker::Ready, Vec::new())],
        ToWorker::EndJob => {
            lied.job_ends += 1;
            vec![(FromWorker::JobEnded, Vec::new())]
        }
        ToWorker::Blob { .. } => Vec::new(),
        ToWorker::Batch { seq, start, count } | ToWorker::Range { seq, start, count } => {
            lied.batches += 1;
            let items = match is_range {
                true => crate::plumbing::int_range::RangeItems::<u64>::from_bytes(tail, count).ok()?.iter().collect(),
                false => decode_items::<u64>(tail, count).ok()?,
            };
            // The right outputs, for lies about everything else.
            let twice: Vec<u64> = items.iter().map(|x| 2 * x).collect();
            let right = bytes(&twice)?;
            match lie {
                Lie::ShiftedStart => vec![(done(seq, start + 1, count, count), right)],
                Lie::CountTooHigh => {
                    let more: Vec<u64> = twice.iter().copied().chain([7, 7, 7]).collect();
                    vec![(done(seq, start, count, count + 3), bytes(&more)?)]
                }
                Lie::UnknownSeq => vec![(done(seq + 1000, start, count, count), right)],
                Lie::Repeated => {
                    vec![(done(seq, start, count, count), right.clone()), (done(seq, start, count, count), right)]
                }
                Lie::HugeUnitCount => vec![(done(seq, start, 1 << 28, 1 << 28), Vec::new())],
                Lie::OtherBuild => Vec::new(),
            }
        }
    })
}
