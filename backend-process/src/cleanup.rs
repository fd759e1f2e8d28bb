//! Nothing outlives the driver: every live worker process is recorded here, and SIGINT or
//! SIGTERM kills them (through engine-core's [`interrupt`](adparallelengine_core::remote) cleanups,
//! which also remove shared files) before the driver exits. If the driver dies another way,
//! each worker gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::sync::{Mutex, Once};

static LIVE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static REGISTERED: Once = Once::new();

/// Records a live worker process.
pub(crate) fn track(pid: i32) {
    REGISTERED.call_once(|| {
        adparallelengine_core::remote::register_cleanup(adparallelengine_core::remote::cleanup_id(), kill_live)
    });
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

fn kill_live() {
    for pid in live_workers() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills every live worker process and runs every registered cleanup.
pub fn kill_all_and_clean() {
    kill_live();
    adparallelengine_core::remote::run_cleanups();
}
