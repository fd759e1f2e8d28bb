//! Starting under a launcher: whether this process is an MPI rank, MPI's initialization (once
//! per process), and the life of a worker rank, which serves the driver and exits.

use crate::transport::RankTransport;
use adparallelengine_core::remote::Transport;
use adparallelengine_core::{Error, Result};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::sync::Mutex;

/// Variables that `mpirun`/`mpiexec`/`srun` of OpenMPI, MPICH (Hydra) and PMIx set in every rank.
const LAUNCHER_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"];

/// The MPI environment of this process, once initialized; `None` again after finalization.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

pub(crate) fn mpi_err(message: impl Into<String>) -> Error {
    Error::Backend { backend: "mpi", message: message.into() }
}

/// Whether this process was started by an MPI launcher (`mpirun -n N prog`), from the
/// variables launchers set. MPI is never initialized in a process that was not: a singleton
/// `MPI_Init` may try to start a runtime of its own.
pub fn launched() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

/// Initializes MPI once for the process (asking for `MPI_THREAD_MULTIPLE`: the driver's jobs
/// may run on any thread; every call is still made under one lock) and returns this rank and
/// the world size.
pub(crate) fn init() -> Result<(i32, usize)> {
    let mut g = UNIVERSE.lock().map_err(|_| mpi_err("the MPI state lock is poisoned"))?;
    if g.is_none() {
        if mpi::environment::is_finalized() {
            return Err(mpi_err(
                "MPI was finalized when the previous MPI engine was dropped, and cannot start again: \
                 build one MPI engine for the whole run",
            ));
        }
        let (universe, provided) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| mpi_err("MPI was initialized by someone else: let adparallelengine initialize it"))?;
        if matches!(provided, Threading::Single | Threading::Funneled) {
            return Err(mpi_err(format!(
                "this MPI library offers only {provided:?} threading; adparallelengine needs at least \
                 MPI_THREAD_SERIALIZED"
            )));
        }
        *g = Some(universe);
    }
    let world = SimpleCommunicator::world();
    Ok((world.rank(), world.size() as usize))
}

/// The world communicator, MPI initialized if it was not (as the engine will need it). For
/// MPI of the program's own before the engine is built: every rank reaches this.
pub fn world() -> Result<SimpleCommunicator> {
    init()?;
    Ok(SimpleCommunicator::world())
}

/// Finalizes MPI (dropping the universe); later MPI engines fail with a clear error.
pub(crate) fn finalize() {
    if let Ok(mut g) = UNIVERSE.lock() {
        drop(g.take());
    }
}

/// Ends the whole MPI job at once (every rank), for a driver that cannot end it cleanly.
pub(crate) fn abort(code: i32) -> ! {
    let world = SimpleCommunicator::world();
    world.abort(code)
}

/// On a rank other than 0 of an MPI job, serves the driver (rank 0) until it closes the
/// engine, then finalizes MPI and exits the process with status 0 (3 if the link to the
/// driver failed): a worker rank never returns from here into the user's `main`. Returns at
/// once in any other process; on rank 0 it initializes MPI.
pub fn serve_if_worker_rank() -> Result<()> {
    serve_worker_rank_with(|t| {
        adparallelengine_core::remote::serve_connection(
            t,
            &adparallelengine_store::open_dir_view,
            &adparallelengine_store::local_dir_store,
        )
    })
}

/// [`serve_if_worker_rank`], serving the driver with `serve` over this rank's connection to it.
pub(crate) fn serve_worker_rank_with(
    serve: impl FnOnce(&mut dyn Transport) -> std::result::Result<(), String>,
) -> Result<()> {
    if !launched() {
        return Ok(());
    }
    let (rank, _) = init()?;
    if rank == 0 {
        return Ok(());
    }
    let mut t = RankTransport::new();
    let code = match serve(&mut t) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("adparallelengine MPI rank {rank}: {message}");
            3
        }
    };
    finalize();
    std::process::exit(code);
}
