//! Becoming a worker before `main`: backends whose workers run this same program (re-executed
//! processes, pods of the program's image) register an entry here, and one hook that runs
//! before `main` (an ELF `.init_array` constructor) calls each. An entry returns at once unless
//! its environment says this process is one of its workers; then it serves and exits, so a
//! worker never runs the user's `main`. The task registry is a linker-built slice, complete
//! before any constructor runs, so an entry can find tasks already.

/// Every registered worker entry of this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static WORKER_ENTRIES: [fn()];

/// Runs before `main` (an ELF `.init_array` entry).
#[used]
#[cfg_attr(any(target_os = "linux", target_os = "android", target_os = "freebsd"), link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
static PRE_MAIN_HOOK: extern "C" fn() = pre_main_hook;

extern "C" fn pre_main_hook() {
    run_entries();
}

fn run_entries() {
    for entry in WORKER_ENTRIES {
        entry();
    }
}

/// Runs every worker entry now: engine construction calls this as a safety net, before
/// anything of `main` can start more workers. It also keeps the pre-`main` hook linked in (a
/// static nothing refers to may be dropped by the linker).
pub fn become_worker_if_asked() {
    std::hint::black_box(&PRE_MAIN_HOOK);
    run_entries();
}

/// Registers a worker entry: a function that serves and exits when this process was started
/// as one of a backend's workers, and returns at once otherwise.
///
/// ```
/// fn my_backend_entry() {
///     if std::env::var_os("MY_BACKEND_WORKER").is_none() {
///         return;
///     }
///     // ... serve the driver, then std::process::exit(0)
/// }
/// adparallelengine_core::worker_entry!(my_backend_entry);
/// adparallelengine_core::remote::become_worker_if_asked(); // returns: not a worker
/// ```
#[macro_export]
macro_rules! worker_entry {
    ($f:path) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::WORKER_ENTRIES)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: fn() = $f;
        };
    };
}
