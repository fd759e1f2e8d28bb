//! For tests that play a driver by hand against a worker (a transport, a worker entry):
//! a job's spec, and a reader of the worker's answers. With the `conformance` feature.

use crate::remote::wire::{decode_items, encode_msg, read_frame_into, split_frame, ByteBuf};
use crate::remote::{FromWorker, JobSpec};
use crate::Task;
use std::io::Read;

/// The spec of a job of `T` with unit args and init.
pub fn job_spec<T: Task>(shipped: bool) -> JobSpec {
    JobSpec {
        task: T::name().to_string(),
        args: ByteBuf(encode_msg(&()).unwrap_or_default()),
        init: ByteBuf(encode_msg(&()).unwrap_or_default()),
        fail_fast: true,
        item_stats: false,
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
