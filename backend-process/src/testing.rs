//! For tests of the driver: a worker process that forges its answers. With the `testing`
//! feature only; **not for production use**.
//!
//! Worker processes are this executable, re-executed, and all alike: a test cannot start one
//! of them differently. So a test puts [`liar_env`] in the driver's environment before its
//! backend starts workers; every worker process inherits it, the first to start claims the
//! named file (writing its pid there, see [`liar_pid`]) and answers as engine-core's forging
//! worker ([`serve_lying`](adparallelengine_core::remote::testing::serve_lying)) over its real
//! transport (socket and shared-memory rings) instead of the honest serve loop. The others, and
//! every worker started later (a replacement), find the file taken and serve honestly.

use adparallelengine_core::remote::testing::Lie;
use std::io::Write;
use std::path::Path;

/// The variable that makes one worker process lie: `<lie>:<claim file>`, the lie named as
/// [`Lie`]'s `Debug` prints it (`ShiftedStart`, …). See [`liar_env`].
pub const ENV_LIE: &str = "ADPARALLELENGINE_TEST_LIE";

/// The variable and value to set in the driver's environment (before its backend starts
/// workers) so that the first worker process started lies as `lie` and writes its pid to
/// `claim`, which must not exist yet; the other workers serve honestly.
pub fn liar_env(lie: Lie, claim: &Path) -> (&'static str, String) {
    (ENV_LIE, format!("{lie:?}:{}", claim.display()))
}

/// The pid of the worker process that claimed `claim` to lie, once it has.
pub fn liar_pid(claim: &Path) -> Option<u32> {
    std::fs::read_to_string(claim).ok()?.trim().parse().ok()
}

/// In a worker process (called by its hook, after its setup): the lie to tell, if [`ENV_LIE`]
/// asks for one and this process is the first to claim its file.
pub(crate) fn chosen_to_lie() -> Option<Lie> {
    let asked = std::env::var(ENV_LIE).ok()?;
    // Not for whatever the task starts.
    std::env::remove_var(ENV_LIE);
    let (name, claim) = asked.split_once(':')?;
    let every = Lie::FORGED.into_iter().chain([Lie::OtherBuild]);
    let lie = every.into_iter().find(|l| format!("{l:?}") == name)?;
    // Only one process ever gets the file: it lies, every other serves honestly.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(claim).ok()?;
    file.write_all(std::process::id().to_string().as_bytes()).ok()?;
    Some(lie)
}
