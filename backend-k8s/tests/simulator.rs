//! kube-rs against the local Kubernetes API of `tools/k8s-sim` (real HTTP, real JSON): the
//! worker Job the backend makes — created, its pods run with their environment (a value, the
//! run's secret through a Secret, the pod's name through the downward API), deleted with
//! foreground propagation — checked end to end, pods run as local processes.

use adparallelengine_k8s::job_spec::{run_secret, worker_job, RunNames};
use adparallelengine_k8s::{client_from_kubeconfig, runtime, K8sBuilder};
use adparallelengine_test_support::k8s_sim::Simulator;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::time::{Duration, Instant};

#[test]
fn kube_rs_creates_the_worker_job_sees_its_pods_run_and_deletes_it() {
    let sim = Simulator::start(&[]).unwrap();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let client = client_from_kubeconfig(&sim.kubeconfig).await.unwrap();
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let secrets: Api<Secret> = Api::namespaced(client, "default");
        let names = RunNames::new("smoke");
        let opts = K8sBuilder::new(2).image("local/this-program").env("GREETING", "hello from");
        let script =
            "echo \"$GREETING $ADPARALLELENGINE_WORKER_NAME $ADPARALLELENGINE_SECRET $ADPARALLELENGINE_DRIVER\"";
        let cmd = ["/bin/sh".to_string(), "-c".into(), script.into()];
        let job = worker_job(&opts, &names, "127.0.0.1:9", &cmd).unwrap();
        secrets.create(&PostParams::default(), &run_secret(&names, "feed", &Default::default())).await.unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        // Both pods run to completion; their logs show the environment arrived.
        let selector = ListParams::default().labels(&names.selector());
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
            assert_eq!(log.trim(), format!("hello from {name} feed 127.0.0.1:9"));
        }
        // Foreground deletion: the Job goes once its pods are gone.
        jobs.delete(&names.job, &DeleteParams::foreground()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while jobs.get_opt(&names.job).await.unwrap().is_some() || !pods.list(&selector).await.unwrap().items.is_empty()
        {
            assert!(Instant::now() < deadline, "the Job or its pods outlived a foreground delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(sim);
}
