//! Test harnesses shared by the workspace's tests, benches and tools; never published, so
//! paths into the repository (`tools/`) may live here and nowhere in library code.

pub mod dask;
pub mod k8s_sim;
pub mod local_dial_in;
pub mod mpi;
pub mod slurm;
pub mod wait;
pub mod warnings;
