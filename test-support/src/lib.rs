//! Test harnesses shared by the workspace's tests, benches and tools; never published, so
//! paths into the repository (`tools/`) may live here and nowhere in library code.

pub mod k8s_sim;
pub mod mpi;
