//! One job's reading of a worker's connection (on its reader thread): frames to engine events.

use super::{Conn, ConnHandle, Pool, Pooled};
use crate::plumbing::batch::Event;
use crate::plumbing::Placement;
use crate::remote::wire::read_frame_into;
use crate::remote::{hear, Heard, SentBatches};
use crossbeam_channel::Sender;
use serde::de::DeserializeOwned;
use std::io::BufReader;

/// Reads worker `w`'s frames until it says the job ended (then it goes back to the pool) or
/// its connection ends (reported as [`Event::Lost`], with how the worker ended). A read that
/// times out (a cancelled worker that did not end its job in time) stops the worker.
pub(crate) fn read_worker<C: Conn, O: DeserializeOwned + 'static>(
    w: usize,
    mut p: Pooled<C>,
    events: Sender<Event<O>>,
    placement: Option<Placement<O>>,
    sent: &SentBatches,
    pool: &Pool<C>,
) {
    let stream = match p.conn.as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            p.conn.kill();
            let reason = format!("{} (cannot read its connection: {e})", p.conn.ended());
            drop(p);
            let _ = events.send(Event::Lost { worker: w, reason });
            return;
        }
    };
    let max = p.conn.max_frame();
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut trouble: Option<String> = None;
    // One buffer for every frame of this worker: no fresh pages per batch.
    let mut payload = Vec::new();
    loop {
        let apart = match read_frame_into(&mut r, max, &mut payload) {
            Ok(Some(apart)) => apart,
            Ok(None) => break,
            Err(e) => {
                trouble = Some(format!("connection failed: {e}"));
                p.conn.kill();
                break;
            }
        };
        let incoming = match p.conn.incoming(&payload, apart) {
            Ok(i) => i,
            Err(e) => {
                trouble = Some(format!("bad frame: {e}"));
                p.conn.kill();
                break;
            }
        };
        let event = match hear::<O>(w, incoming, placement.as_ref(), Some(sent)) {
            Heard::Nothing => continue,
            Heard::Misbehaved(why) => {
                // Nothing it said is used: it is stopped, and its batches run elsewhere.
                tracing::warn!(worker = w, peer = %p.conn.handle().name(), %why, "worker misbehaved; stopping it");
                trouble = Some(format!("misbehaved: {why}"));
                p.conn.kill();
                break;
            }
            Heard::JobEnded => {
                // In good order, and nothing unread: the worker can serve another job.
                if r.buffer().is_empty() {
                    drop(r);
                    pool.give_back(p);
                    return;
                }
                tracing::warn!(worker = w, "worker sent data after the end of its job; stopping it");
                p.conn.kill();
                drop(r);
                p.conn.ended();
                return;
            }
            Heard::Event(ev) => ev,
        };
        // The tail has been decoded: its space in the side channel can be reused.
        if apart {
            p.conn.release_apart();
        }
        // The job is gone (it was cancelled: the worker was killed, or told to end the job,
        // and its last results are dropped here until it says it did).
        let _ = events.send(event);
    }
    drop(r);
    let mut reason = p.conn.ended();
    if let Some(t) = trouble {
        reason = format!("{reason} ({t})");
    }
    // The connection goes before the loss is told: a source counting live workers sees it.
    drop(p);
    let _ = events.send(Event::Lost { worker: w, reason });
}
