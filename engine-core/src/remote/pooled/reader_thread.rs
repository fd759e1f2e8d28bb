//! [`ReaderThread`]: the thread that reads one pooled worker's connection, kept with the
//! worker between jobs.
//!
//! A job used to start a reader thread per worker and join it at the job's end. Starting and
//! joining a thread costs 70–100 µs on a 2-vCPU VM (measured: a loop of `spawn` + `join` of
//! an empty thread), which was a third of a one-item job on a worker process (186 µs) and
//! paid again for every worker of every job. The thread now lives as long as the worker's
//! [`Pooled`](super::Pooled) entry: each job hands it that job's reading
//! ([`ReaderThread::run`]), and it parks between jobs. It ends once the worker's entry is
//! dropped (the worker retired, lost, or the pool dropped) and its last job returned; the
//! [`Pool`](super::Pool) joins it.

use crossbeam_channel::{unbounded, Sender};
use std::thread::JoinHandle;

/// One job's reading of a worker's connection, run on the worker's reader thread.
pub(crate) type ReadJob = Box<dyn FnOnce() + Send>;

/// The sending end of a worker's reader thread (see the module docs). Dropping every clone
/// lets the thread end once its current job returns.
#[derive(Clone)]
pub(crate) struct ReaderThread {
    jobs: Sender<ReadJob>,
}

impl ReaderThread {
    /// Starts a reader thread named `name`, idle: its handle, and the thread's to join.
    pub(crate) fn start(name: String) -> std::io::Result<(ReaderThread, JoinHandle<()>)> {
        let (jobs, queue) = unbounded::<ReadJob>();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // Ends when every sender is gone: the worker's entry was dropped.
            while let Ok(job) = queue.recv() {
                job();
            }
        })?;
        Ok((ReaderThread { jobs }, handle))
    }

    /// Runs `job` on the thread, after any job it is running; `job` back if the thread is
    /// gone (it ends only when this handle is dropped, or when a job panicked).
    pub(crate) fn run(&self, job: ReadJob) -> Result<(), ReadJob> {
        self.jobs.send(job).map_err(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_runs_every_job_in_turn_and_ends_when_dropped() {
        let (reader, handle) = ReaderThread::start("reader-test".into()).unwrap();
        let (tx, rx) = unbounded();
        for i in 0..3 {
            let tx = tx.clone();
            assert!(reader.run(Box::new(move || tx.send((i, std::thread::current().id())).unwrap())).is_ok());
        }
        let ran: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2], "in turn");
        assert!(ran.iter().all(|r| r.1 == handle.thread().id()), "on the one thread");
        drop(reader);
        handle.join().unwrap();
    }
}
