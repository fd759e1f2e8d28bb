//! Nothing outlives an interrupted driver: backends register cleanups here (kill worker
//! processes, remove a share store, delete a Kubernetes Job), and SIGINT or SIGTERM runs them
//! all before the driver exits with the conventional status (130, 143). Cleanups done the
//! ordinary way are unregistered.
//!
//! The handler is installed on the first registration, on its own thread (signal-hook's
//! iterator), so cleanups may allocate, lock and make system calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

type Cleanup = Box<dyn FnOnce() + Send>;
static CLEANUPS: Mutex<BTreeMap<u64, Cleanup>> = Mutex::new(BTreeMap::new());
static HANDLER: Once = Once::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id to register a cleanup under.
pub fn cleanup_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Registers, under `id`, a cleanup to run if the driver is interrupted; drop it with
/// [`unregister_cleanup`] once it was done the ordinary way. Registering again under the same
/// id replaces it.
pub fn register_cleanup(id: u64, f: impl FnOnce() + Send + 'static) {
    install_handler();
    if let Ok(mut g) = CLEANUPS.lock() {
        g.insert(id, Box::new(f));
    }
}

/// Drops a cleanup registered with [`register_cleanup`] (it was done the ordinary way).
pub fn unregister_cleanup(id: u64) {
    if let Ok(mut g) = CLEANUPS.lock() {
        g.remove(&id);
    }
}

/// Runs every registered cleanup now, in registration order (worker processes, registered
/// first, die before their shared files go).
pub fn run_cleanups() {
    let cleanups = CLEANUPS.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
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
                        tracing::warn!(signal = sig, "interrupted: stopping workers and removing shared files");
                        run_cleanups();
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
