//! The Kubernetes the `k8s` cells run against: the local API of `tools/k8s-sim`, which
//! runs each worker pod as a local process. Its command mode is the launcher, as `mpirun` is
//! for MPI: `python3 tools/k8s-sim/k8s_sim.py --kubeconfig F -- complete k8s ...` starts the
//! API, runs the example with `KUBECONFIG=F`, and stops when it ends, with its status.
//!
//! With `ADPARALLELENGINE_K8S_CLUSTER=1` (opt-in) the cells run against the real cluster of
//! `KUBECONFIG` instead, with the image of `ADPARALLELENGINE_K8S_IMAGE` (and the other
//! `ADPARALLELENGINE_K8S_*` settings) from the environment: see the README.

use std::path::Path;
use std::process::Command;

/// The pods' image. The simulator ignores images (it runs the container's command, this
/// example's path), but the backend requires one, as a cluster would.
pub const IMAGE: &str = "local/adparallelengine-complete";

/// Asks for the real cluster of `KUBECONFIG` instead of the local API.
pub const ENV_CLUSTER: &str = "ADPARALLELENGINE_K8S_CLUSTER";

/// Whether the cells run against a real cluster.
pub fn real_cluster() -> bool {
    std::env::var(ENV_CLUSTER).is_ok_and(|v| v == "1" || v == "true")
}

/// The command prefix that runs a program against a fresh local Kubernetes API (nothing for
/// a real cluster).
pub fn launch_prefix(root: &Path) -> Vec<String> {
    if real_cluster() {
        return Vec::new();
    }
    let kubeconfig = std::env::temp_dir().join(format!("adpe-xtask-{}.kubeconfig", std::process::id()));
    vec![
        "python3".into(),
        root.join("tools/k8s-sim/k8s_sim.py").to_string_lossy().into_owned(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into_owned(),
        "--".into(),
    ]
}

/// Sets what the example needs to find its pods' image (a real cluster's comes from the
/// environment).
pub fn launch_env(cmd: &mut Command) {
    if !real_cluster() {
        cmd.env("ADPARALLELENGINE_K8S_IMAGE", IMAGE);
    }
}
