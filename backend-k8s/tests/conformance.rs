//! The conformance kit on worker pods of the local Kubernetes API (`tools/k8s-sim`, pods as
//! local processes of this test binary dialing back over TCP): one backend, its Job of two
//! pods, shared by every engine the kit makes.

use adparallelengine_core::conformance::{Kit, SharedBackend};
use adparallelengine_k8s::K8sBuilder;
use adparallelengine_test_support::k8s_sim::Simulator;
use std::time::Duration;

#[test]
fn pods_pass_the_conformance_kit() {
    let sim = Simulator::start(&[]).unwrap();
    let backend = K8sBuilder::new(2)
        .kubeconfig(&sim.kubeconfig)
        .image("local/this-test")
        .start_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let report = Kit::new(SharedBackend::maker(backend)).run();
    assert!(report.is_ok(), "{report}");
}
