//! Forged answers end to end on the Kubernetes backend. A peer that holds the run's secret
//! (read from the run's Secret, as anyone who may read Secrets in the namespace can) dials
//! the driver's door, knocks, is taken as a worker, and answers its batches with forged
//! `Done` messages (engine-core's forging worker, `remote::testing::serve_lying`). For each
//! forgery — a shifted start, a count too high, a batch never sent, an answer repeated, a huge
//! count of `()` outputs — the driver cuts that connection off as misbehaving (logged with its
//! name and what was wrong) and the Job's honest pods finish the job: every result is right.
//!
//! Against the local Kubernetes API of `tools/k8s-sim`, whose pods are processes of this test
//! binary. They wait until the liar has been taken as the job's first worker, so that it is
//! given batches whatever the speed of the machine.

use adparallelengine_core::remote::testing::{serve_lying, Lie, Lied};
use adparallelengine_core::remote::{knock, Incoming, Secret, StreamTransport, Transport, DEFAULT_MAX_FRAME};
use adparallelengine_core::{Batching, Engine};
use adparallelengine_k8s::job_spec::SECRET_KEY;
use adparallelengine_k8s::K8sBuilder;
use adparallelengine_test_support::k8s_sim::Simulator;
use adparallelengine_test_support::warnings;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

adparallelengine_core::task!(Double = |x: u64| -> u64 { 2 * x });
adparallelengine_core::task!(Nothing = |_x: u64| -> () {});

/// The pods' command: wait for the file `$0` to exist, then become this test binary (which
/// serves as a worker pod before `main`).
const WAIT_THEN_EXEC: &str = r#"while [ ! -e "$0" ]; do sleep 0.02; done; exec "$1""#;

/// The bound on every wait of this test (no timing is asserted: a hang fails instead of holding).
const PATIENCE: Duration = Duration::from_secs(30);

/// The run's secret, read from its Secret once the first job has created it.
fn read_secret(kubeconfig: &Path, ns: &str, name: &str) -> Secret {
    let rt = adparallelengine_k8s::runtime().unwrap();
    let began = Instant::now();
    rt.block_on(async {
        let c = adparallelengine_k8s::client_from_kubeconfig(kubeconfig).await.unwrap();
        let secrets = kube::Api::<SecretObject>::namespaced(c, ns);
        loop {
            if let Some(s) = secrets.get_opt(name).await.unwrap() {
                let data = s.data.unwrap_or_default();
                let hex = String::from_utf8(data.get(SECRET_KEY).expect("the secret's key").0.clone()).unwrap();
                return Secret::from_hex(&hex).expect("64 hex digits");
            }
            assert!(began.elapsed() < PATIENCE, "no Secret {name} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// The liar's connection, which lets the honest pods start (creates `go`) once the driver
/// has said its first word to the liar: it has been taken as a worker.
struct LetOthersIn<T> {
    inner: T,
    go: Option<PathBuf>,
}

impl<T: Transport> Transport for LetOthersIn<T> {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> std::io::Result<()> {
        self.inner.send(head, tail)
    }
    fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
        let got = self.inner.recv();
        if let Some(go) = self.go.take() {
            std::fs::write(go, b"go")?;
        }
        got
    }
}

/// Starts the liar: it dials in as soon as the run's Secret exists, knocks with its secret
/// as `name`, and lies as `lie` until the driver closes its connection. What it was sent
/// arrives on the returned channel.
fn start_liar(
    b: &adparallelengine_k8s::K8sBackend,
    kubeconfig: &Path,
    name: String,
    lie: Lie,
    go: PathBuf,
) -> crossbeam_channel::Receiver<Lied> {
    let (ns, secret_name, driver) =
        (b.namespace().to_string(), format!("{}-secret", b.job_name()), b.driver_address().to_string());
    let kubeconfig = kubeconfig.to_path_buf();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let secret = read_secret(&kubeconfig, &ns, &secret_name);
        let mut stream = TcpStream::connect(&driver).unwrap();
        knock(&mut stream, &secret, &name).unwrap();
        let reader = stream.try_clone().unwrap();
        let mut t = LetOthersIn { inner: StreamTransport::new(reader, stream, DEFAULT_MAX_FRAME), go: Some(go) };
        let _ = tx.send(serve_lying(&mut t, lie));
    });
    rx
}

#[test]
fn a_pod_that_forges_its_answers_is_cut_off_and_every_result_is_right() {
    warnings::capture();
    let sim = Simulator::start(&[]).unwrap();
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let t0 = Instant::now();
    for (i, lie) in Lie::FORGED.into_iter().enumerate() {
        let go = std::env::temp_dir().join(format!("adpe-forged-done-{}-{i}", std::process::id()));
        let _ = std::fs::remove_file(&go);
        let b = K8sBuilder::new(2)
            .kubeconfig(&sim.kubeconfig)
            .image("local/this-test")
            .command([
                "/bin/sh".to_string(),
                "-c".into(),
                WAIT_THEN_EXEC.into(),
                go.to_string_lossy().into(),
                exe.clone(),
            ])
            .start_timeout(PATIENCE)
            .build()
            .unwrap();
        let name = format!("liar-{lie:?}");
        let liar = start_liar(&b, &sim.kubeconfig, name.clone(), lie, go.clone());
        let engine = Engine::from_backend(b);

        // The first job: the liar is its worker 0, an honest pod worker 1; the other honest
        // pod takes the liar's place once it is cut off.
        match lie {
            // A driver that believed 2^28 `()` outputs per answer would spin on them.
            Lie::HugeUnitCount => {
                let out = engine.map(Nothing, 0..300u64).batched(Batching::ChunkSize(10)).run();
                assert_eq!(out.map(|o| o.len()).ok(), Some(300), "{lie:?}");
            }
            _ => {
                let out = engine.map(Double, 0..600u64).batched(Batching::ChunkSize(10)).run();
                assert_eq!(out.ok(), Some((0..600).map(|x| 2 * x).collect::<Vec<_>>()), "{lie:?}");
            }
        }
        // Cut off mid-job: it was sent batches, and never the end of a job.
        let lied = liar.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("{lie:?}: the liar is still connected"));
        assert!(lied.batches >= 1 && lied.job_ends == 0, "{lie:?}: {lied:?}");
        let log = warnings::all();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("pod {name}")) && l.contains("misbehaved"))
            .unwrap_or_else(|| panic!("{lie:?}: no word of the liar in the driver's log:\n{log}"));
        assert!(line.contains(lie.complaint()), "{lie:?}: {line}");
        eprintln!("{lie:?}: {line}");

        // The engine goes on, on the honest pods.
        let all = engine.map(Double, 0..100u64).batched(Batching::ChunkSize(7)).collect_results().unwrap();
        let all: Vec<u64> = all.into_iter().map(|r| r.expect("an item")).collect();
        assert_eq!(all, (0..100).map(|x| 2 * x).collect::<Vec<_>>(), "{lie:?}");
        drop(engine);
        let _ = std::fs::remove_file(&go);
    }
    eprintln!("{} forged cases in {:?}", Lie::FORGED.len(), t0.elapsed());
}
