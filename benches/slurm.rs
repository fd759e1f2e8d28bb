//! The Slurm backend on a private one-node Slurm cluster (`test-support`'s `SlurmCluster`:
//! munged, slurmctld, slurmd), each figure against a baseline of the same run:
//!
//! - (c) the time from building the engine to its first result (sbatch, the array's tasks
//!   scheduled and started, the dial-in), and of its second job (the tasks kept);
//! - (a) per-item round trip, unbatched, 1 worker: a Slurm task over TCP vs the process
//!   backend (a worker process over a socket pair);
//! - (b) 64 CPU-bound items of about 50 ms on 2 array tasks: speedup over serial.
//!
//! `cargo bench --bench slurm --features slurm,process` (or `cargo xtask bench`).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use adparallelengine::backends::slurm::SlurmBuilder;
use adparallelengine_test_support::slurm::{slurm_installed, SlurmCluster};

fn main() {
    if !slurm_installed() {
        println!("slurm bench skipped: slurmctld, slurmd or munged is not installed (see .ci/run)");
        return;
    }
    SlurmCluster::shared().expect("a local Slurm cluster");
    let exe = std::env::current_exe().expect("exe");
    cluster::print_figures("Slurm", "slurm task", |workers: usize| {
        SlurmBuilder::new(workers).program_path(&exe).build().expect("slurm backend")
    });
}
