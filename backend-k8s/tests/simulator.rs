//! kube-rs against the local Kubernetes API of `tools/k8s-sim` (real HTTP, real JSON): the
//! calls the backend makes — create the worker Job, see its pods run with their environment,
//! delete it with foreground propagation — checked end to end, pods run as local processes.

use backend_k8s::{client_from_kubeconfig, runtime, WorkerJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The simulator, stopped (SIGTERM: it kills its pods) when dropped.
struct Simulator {
    child: Child,
    kubeconfig: PathBuf,
}

impl Simulator {
    fn start() -> Simulator {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let kubeconfig = std::env::temp_dir().join(format!("adpe-k8s-sim-{}.kubeconfig", std::process::id()));
        let mut child = Command::new("python3")
            .arg(root.join("tools/k8s-sim/k8s_sim.py"))
            .args(["--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the simulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
        Simulator { child, kubeconfig }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

unsafe fn libc_kill(pid: i32, sig: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, sig);
}

#[test]
fn kube_rs_creates_a_worker_job_sees_its_pods_run_and_deletes_it() {
    let sim = Simulator::start();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let client = client_from_kubeconfig(&sim.kubeconfig).await.unwrap();
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let spec = WorkerJob {
            name: "adpe-smoke".into(),
            image: "local/this-program".into(),
            command: vec!["/bin/sh".into(), "-c".into(), "echo \"$GREETING\"; sleep 0.2".into()],
            env: vec![("GREETING".into(), "hello from a pod".into())],
            parallelism: 2,
            labels: [("adparallelengine/run".to_string(), "smoke".to_string())].into(),
            ttl_seconds_after_finished: 60,
        };
        jobs.create(&PostParams::default(), &spec.to_job()).await.unwrap();
        // Both pods run to completion; their logs show the environment arrived.
        let selector = ListParams::default().labels("adparallelengine/run=smoke");
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = loop {
            let list = pods.list(&selector).await.unwrap();
            let phases: Vec<String> = list.items.iter().filter_map(|p| p.status.as_ref()?.phase.clone()).collect();
            if phases.len() == 2 && phases.iter().all(|p| p == "Succeeded") {
                break list.items;
            }
            assert!(Instant::now() < deadline, "pods never finished: {phases:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for p in &done {
            let name = p.metadata.name.clone().unwrap();
            let log = pods.logs(&name, &Default::default()).await.unwrap();
            assert_eq!(log.trim(), "hello from a pod", "{name}");
        }
        // Foreground deletion: the Job goes once its pods are gone.
        jobs.delete("adpe-smoke", &DeleteParams::foreground()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while jobs.get_opt("adpe-smoke").await.unwrap().is_some()
            || !pods.list(&selector).await.unwrap().items.is_empty()
        {
            assert!(Instant::now() < deadline, "the Job or its pods outlived a foreground delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(sim);
}
