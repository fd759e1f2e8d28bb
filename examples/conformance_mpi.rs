//! The conformance kit on the MPI backend: run it under a launcher, e.g.
//! `mpirun -n 3 target/debug/examples/conformance_mpi`. Rank 0 runs every check on one MPI
//! backend (MPI starts once per run) shared by the kit's engines; the other ranks serve and
//! exit when rank 0 is done. Prints the kit's report; exits 0 when every check passed.
//! `tests/mpi.rs` runs it.

use adparallelengine::backends::mpi::MpiBackend;
use adparallelengine::conformance::{Kit, SharedBackend};

fn main() {
    // Ranks > 0 serve inside `new` and exit there.
    let backend = match MpiBackend::new(None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    };
    let report = Kit::new(SharedBackend::maker(backend)).run();
    print!("{report}");
    std::process::exit(if report.is_ok() { 0 } else { 1 });
}
