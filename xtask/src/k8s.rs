//! The Kubernetes the `k8s` cells run against: the local API of `tools/k8s-sim`, which
//! runs each worker pod as a local process. Its command mode is the launcher, as `mpirun` is
//! for MPI: `python3 tools/k8s-sim/k8s_sim.py --kubeconfig F -- complete k8s ...` starts the
//! API, runs the example with `KUBECONFIG=F`, and stops when it ends, with its status.

use std::path::Path;
use std::process::Command;

/// The pods' image. The simulator ignores images (it runs the container's command, this
/// example's path), but the backend requires one, as a cluster would.
pub const IMAGE: &str = "local/adparallelengine-complete";

/// The command prefix that runs a program against a fresh local Kubernetes API.
pub fn launch_prefix(root: &Path) -> Vec<String> {
    let kubeconfig = std::env::temp_dir().join(format!("adpe-xtask-{}.kubeconfig", std::process::id()));
    vec![
        "python3".into(),
        root.join("tools/k8s-sim/k8s_sim.py").to_string_lossy().into_owned(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into_owned(),
        "--".into(),
    ]
}

/// Sets what the example needs to find its pods' image.
pub fn launch_env(cmd: &mut Command) {
    cmd.env("ADPARALLELENGINE_K8S_IMAGE", IMAGE);
}
