//! The worker's side of a connection: the handshake with a build fingerprint, shared values
//! sent over the connection, then each job through the task's registered entry.

use super::fingerprint::fingerprint;
use super::protocol::{FromWorker, ToWorker};
use super::transport::{recv_msg, send_msg, skip_job, Transport};
use crate::error::Result;
use crate::remote::registry;
use crate::store::SharedStore;
use std::sync::Arc;

/// Opens, on a worker, the share store a job names (`JobSpec::share_dir`).
pub type OpenStore<'a> = &'a dyn Fn(&str) -> Result<Arc<dyn SharedStore>>;

/// Makes, on a worker, a store of its own for the values sent to it (`ToWorker::Blob`),
/// removed when the worker ends (e.g. a private directory on its local disk).
pub type LocalStore<'a> = &'a dyn Fn() -> Result<Arc<dyn SharedStore>>;

/// Serves a connection: the handshake, then jobs until the driver closes it. `open_store`
/// opens the share store a job names; `local_store` makes the worker's own store for values
/// the driver sends over the connection.
pub fn serve_connection(
    t: &mut dyn Transport,
    open_store: OpenStore<'_>,
    local_store: LocalStore<'_>,
) -> std::result::Result<(), String> {
    let worker = match recv_msg(t)?.map(|(m, _)| m) {
        Some(ToWorker::Hello { fingerprint: theirs, worker }) => {
            let ours = fingerprint();
            if theirs != ours {
                let reason = format!(
                    "worker runs another build of the program (worker {ours}, driver {theirs}): \
                     rebuild and deploy the same binary"
                );
                send_msg(t, &FromWorker::Refused { reason: reason.clone() })?;
                return Err(reason);
            }
            send_msg(t, &FromWorker::Hello { fingerprint: ours.to_string(), pid: std::process::id() })?;
            worker
        }
        Some(other) => return Err(format!("protocol error: expected Hello, got {other:?}")),
        None => return Ok(()),
    };
    // Values sent over the connection, and why the last one could not be kept (reported to
    // the next job, which may need it).
    let mut local: Option<Arc<dyn SharedStore>> = None;
    let mut blob_trouble: Option<String> = None;
    loop {
        let spec = match recv_msg(t)? {
            Some((ToWorker::Blob { key }, bytes)) => {
                let kept = match local.clone() {
                    Some(s) => Ok(s),
                    None => local_store().inspect(|s| local = Some(Arc::clone(s))),
                }
                .and_then(|s| s.put(bytes));
                match kept {
                    Ok(k) if k == key => {}
                    Ok(k) => blob_trouble = Some(format!("shared value {key} arrived damaged (its hash is {k})")),
                    Err(e) => blob_trouble = Some(format!("cannot keep shared value {key}: {e}")),
                }
                continue;
            }
            Some((ToWorker::Job(spec), _)) => spec,
            Some((ToWorker::EndJob, _)) => {
                send_msg(t, &FromWorker::JobEnded)?;
                continue;
            }
            Some((other, _)) => return Err(format!("protocol error: expected Job, got {other:?}")),
            None => return Ok(()),
        };
        let entry = match registry::lookup(&spec.task) {
            Ok(entry) => entry,
            Err(e) => {
                send_msg(t, &FromWorker::Refused { reason: e.to_string() })?;
                skip_job(t)?;
                continue;
            }
        };
        let store = match (spec.shipped, spec.share_dir.as_deref()) {
            (true, _) => match (&blob_trouble, &local) {
                (Some(trouble), _) => Err(trouble.clone()),
                (None, Some(s)) => Ok(Some(Arc::clone(s))),
                (None, None) => local_store().map(Some).map_err(|e| e.to_string()),
            },
            (false, Some(dir)) => open_store(dir).map(Some).map_err(|e| format!("cannot open the share store: {e}")),
            (false, None) => Ok(None),
        };
        match store {
            Ok(store) => (entry.serve)(t, worker, spec, store)?,
            Err(message) => {
                send_msg(t, &FromWorker::InitFailed { message })?;
                skip_job(t)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::wire::{encode_msg, split_frame};
    use crate::remote::Incoming;
    use crate::{Error, ShareKey};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    crate::task!(Twice = |x: u64| -> u64 { 2 * x });

    /// A connection that plays a script of driver messages and records the worker's.
    struct Scripted {
        incoming: VecDeque<Vec<u8>>,
        current: Vec<u8>,
        sent: Vec<FromWorker>,
    }

    impl Transport for Scripted {
        fn send(&mut self, head: &[u8], _tail: &[u8]) -> std::io::Result<()> {
            self.sent.push(split_frame::<FromWorker>(head).map_err(std::io::Error::other)?.0);
            Ok(())
        }
        fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
            match self.incoming.pop_front() {
                Some(m) => {
                    self.current = m;
                    Ok(Some(Incoming { payload: &self.current, bulk: None }))
                }
                None => Ok(None),
            }
        }
    }

    #[derive(Default)]
    struct Kept(Mutex<Vec<(ShareKey, Vec<u8>)>>);
    impl SharedStore for Kept {
        fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
            let k = ShareKey::of(bytes);
            self.0.lock().unwrap().push((k.clone(), bytes.to_vec()));
            Ok(k)
        }
        fn get(&self, key: &ShareKey) -> Result<crate::store::SharedBytes> {
            let g = self.0.lock().unwrap();
            let v = g.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).ok_or(Error::Store("no".into()))?;
            Ok(Arc::new(v))
        }
        fn contains(&self, key: &ShareKey) -> bool {
            self.0.lock().unwrap().iter().any(|(k, _)| k == key)
        }
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        fn keys(&self) -> Vec<ShareKey> {
            self.0.lock().unwrap().iter().map(|(k, _)| k.clone()).collect()
        }
        fn clear(&self) -> Result<()> {
            self.0.lock().unwrap().clear();
            Ok(())
        }
    }

    fn script(blob_key: ShareKey, blob: &[u8]) -> Scripted {
        let mut m = vec![encode_msg(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: 1 }).unwrap()];
        let mut b = encode_msg(&ToWorker::Blob { key: blob_key }).unwrap();
        b.extend_from_slice(blob);
        m.push(b);
        m.push(encode_msg(&ToWorker::Job(crate::remote::testing::job_spec::<Twice>(true))).unwrap());
        m.push(encode_msg(&ToWorker::EndJob).unwrap());
        Scripted { incoming: m.into(), current: Vec::new(), sent: Vec::new() }
    }

    #[test]
    fn shipped_values_are_kept_checked_and_given_to_the_job() {
        let kept = Arc::new(Kept::default());
        let local = {
            let kept = Arc::clone(&kept);
            move || Ok(Arc::clone(&kept) as Arc<dyn SharedStore>)
        };
        let no_dir = |_: &str| -> Result<Arc<dyn SharedStore>> { Err(Error::Store("no directory here".into())) };
        // A value that arrives whole is kept, and the job runs.
        let mut t = script(ShareKey::of(b"table"), b"table");
        serve_connection(&mut t, &no_dir, &local).unwrap();
        assert!(kept.contains(&ShareKey::of(b"table")));
        assert!(
            matches!(t.sent[..], [FromWorker::Hello { .. }, FromWorker::Ready, FromWorker::JobEnded]),
            "{:?}",
            t.sent
        );
        // A value whose bytes do not hash to its key fails the next job's init, saying so.
        let mut t = script(ShareKey::of(b"table"), b"tablE");
        serve_connection(&mut t, &no_dir, &local).unwrap();
        match &t.sent[..] {
            [FromWorker::Hello { .. }, FromWorker::InitFailed { message }, FromWorker::JobEnded] => {
                assert!(message.contains("arrived damaged"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
