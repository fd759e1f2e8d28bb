//! The pool of idle workers, and where new ones come from.

use super::reader_thread::ReaderThread;
use super::Conn;
use crate::{Result, ShareKey};
use std::collections::HashSet;
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Finds new workers for a [`Pool`].
pub trait ConnSource<C>: Send + Sync {
    /// A new worker for slot `worker` of a starting job (blocking until there is one, or an
    /// error says why there is none).
    fn connect(&self, worker: usize) -> Result<C>;

    /// A replacement for a worker that died mid-job; by default, [`connect`](Self::connect).
    /// Called from the dispatch loop: a source whose workers take long to come should not
    /// wait long here while other workers are running.
    fn replace(&self, worker: usize) -> Result<C> {
        self.connect(worker)
    }
}

/// A worker as the pool keeps it.
pub struct Pooled<C> {
    /// Its connection.
    pub conn: C,
    /// It has done its handshake (served a job before).
    pub(crate) warm: bool,
    /// The shared values it has been sent.
    pub(crate) shipped: HashSet<ShareKey>,
    /// The thread that reads its connection during jobs, once a job started it.
    pub(crate) reader: Option<ReaderThread>,
}

/// Idle workers kept between jobs (at most `capacity`), and the source of new ones.
/// Dropping the pool retires every idle worker.
pub struct Pool<C: Conn> {
    capacity: usize,
    idle: Mutex<Vec<Pooled<C>>>,
    source: Box<dyn ConnSource<C>>,
    /// The reader threads of this pool's workers (see [`ReaderThread`]), joined when the pool
    /// is dropped.
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl<C: Conn> Pool<C> {
    /// A pool keeping at most `capacity` idle workers, finding new ones from `source`.
    pub fn new(capacity: usize, source: impl ConnSource<C> + 'static) -> Self {
        Pool { capacity, idle: Mutex::new(Vec::new()), source: Box::new(source), readers: Mutex::default() }
    }

    /// A worker for slot `worker`: an idle one, or a new one from the source.
    pub fn take(&self, worker: usize, replacing: bool) -> Result<Pooled<C>> {
        while let Some(mut p) = self.idle.lock().ok().and_then(|mut g| g.pop()) {
            // One that died while idle (killed from outside) is dropped here, not met mid-job.
            if p.conn.alive() {
                return Ok(p);
            }
            let how = p.conn.ended();
            tracing::debug!(reason = %how, "an idle worker was gone");
        }
        let conn = match replacing {
            true => self.source.replace(worker)?,
            false => self.source.connect(worker)?,
        };
        Ok(Pooled { conn, warm: false, shipped: HashSet::new(), reader: None })
    }

    /// The thread that reads `p`'s connection, started now if `p` has none yet: it stays
    /// with `p` between jobs.
    pub(crate) fn reader_of(&self, p: &mut Pooled<C>) -> std::io::Result<ReaderThread> {
        if let Some(r) = &p.reader {
            return Ok(r.clone());
        }
        let (reader, handle) = ReaderThread::start("adparallelengine-reader".into())?;
        if let Ok(mut g) = self.readers.lock() {
            // Those of workers gone since need no join: they have ended.
            g.retain(|h| !h.is_finished());
            g.push(handle);
        }
        p.reader = Some(reader.clone());
        Ok(reader)
    }

    /// Takes back a worker that ended its job in good order; retires it when the pool is full.
    pub fn give_back(&self, mut p: Pooled<C>) {
        p.warm = true;
        p.conn.reset();
        let mut p = Some(p);
        if let Ok(mut g) = self.idle.lock() {
            if g.len() < self.capacity {
                g.extend(p.take());
            }
        }
        if let Some(p) = p {
            C::retire(vec![p.conn]);
        }
    }

    /// Idle workers now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Retires every idle worker now (the pool stays usable).
    pub fn retire_idle(&self) {
        let idle = self.idle.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        C::retire(idle.into_iter().map(|p| p.conn).collect());
    }
}

impl<C: Conn> Drop for Pool<C> {
    fn drop(&mut self) {
        self.retire_idle();
        // Every reader thread ends now or soon: an idle worker's went with it above, a busy
        // one's when its job returns (no job runs any more: each holds the pool). The pool may
        // be dropped by a reader thread itself (its job held the last reference): that one is
        // not waited for.
        let me = std::thread::current().id();
        let readers = self.readers.get_mut().map(std::mem::take).unwrap_or_default();
        for h in readers {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}
