//! Nothing outlives the driver: every live worker process is recorded here, and SIGINT or
//! SIGTERM kills them (and runs registered cleanups, such as removing shared files) before the
//! driver exits with the conventional status (130, 143). If the driver dies another way, each
//! worker gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Once};

static LIVE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
type Cleanup = Box<dyn FnOnce() + Send>;
static CLEANUPS: Mutex<Option<HashMap<u64, Cleanup>>> = Mutex::new(None);
static HANDLER: Once = Once::new();

/// Records a live worker process.
pub(crate) fn track(pid: i32) {
    install_handler();
    if let Ok(mut g) = LIVE.lock() {
        g.get_or_insert_with(HashSet::new).insert(pid);
    }
}

/// Forgets a worker process once it has been reaped.
pub(crate) fn untrack(pid: i32) {
    if let Ok(mut g) = LIVE.lock() {
        if let Some(s) = g.as_mut() {
            s.remove(&pid);
        }
    }
}

/// Worker processes alive now (for tests).
pub fn live_workers() -> Vec<i32> {
    LIVE.lock().ok().and_then(|g| g.as_ref().map(|s| s.iter().copied().collect())).unwrap_or_default()
}

/// Registers, under `id`, a cleanup to run if the driver is interrupted; drop it with
/// [`unregister_cleanup`] once it was done the ordinary way.
pub fn register_cleanup(id: u64, f: impl FnOnce() + Send + 'static) {
    install_handler();
    if let Ok(mut g) = CLEANUPS.lock() {
        g.get_or_insert_with(HashMap::new).insert(id, Box::new(f));
    }
}

/// Drops a cleanup registered with [`register_cleanup`] (it was done the ordinary way).
pub fn unregister_cleanup(id: u64) {
    if let Ok(mut g) = CLEANUPS.lock() {
        if let Some(m) = g.as_mut() {
            m.remove(&id);
        }
    }
}

/// Kills every live worker process and runs every cleanup.
pub fn kill_all_and_clean() {
    let pids = live_workers();
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let cleanups = CLEANUPS.lock().ok().and_then(|mut g| g.take()).unwrap_or_default();
    for (_, f) in cleanups {
        f();
    }
}

fn install_handler() {
    HANDLER.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                let spawned = std::thread::Builder::new().name("adparallelengine-signals".into()).spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        tracing::warn!(signal = sig, "interrupted: killing worker processes and removing shared files");
                        kill_all_and_clean();
                        std::process::exit(128 + sig);
                    }
                });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the signal thread; Ctrl-C will not clean up workers");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot install SIGINT/SIGTERM handlers"),
        }
    });
}
