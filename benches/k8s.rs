//! Kubernetes backend benchmarks on the local setup (`tools/k8s-sim`: kube-rs over HTTP to a
//! local API whose pods are local processes dialing the driver over loopback TCP), each
//! against baselines measured in the same run:
//!
//! - (a) unbatched per-item round trip, 1 worker: vs a raw TCP ping-pong between two
//!   processes, and vs the process backend;
//! - (b) 64 CPU-bound items of about 50 ms, 2 workers: speedup over serial, and the process
//!   backend's.
//!
//! `cargo bench --bench k8s --features k8s` (or `cargo xtask bench`).

mod common;

use adparallelengine::backends::k8s::K8sBuilder;
use adparallelengine::backends::ProcessBackend;
use adparallelengine::{Batching, Engine, Kind, Progress};
use adparallelengine_test_support::k8s_sim::Simulator;
use common::{median, ratio, Echo, Spin};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const ECHO_ENV: &str = "ADPE_BENCH_TCP_ECHO";

/// The raw baseline: this binary re-executed as a TCP echo client of ours.
fn raw_round_trip(n: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(ECHO_ENV, &addr)
        .spawn()
        .expect("echo process");
    let (mut s, _) = listener.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; 8];
    let t0 = Instant::now();
    for i in 0..n as u64 {
        s.write_all(&i.to_le_bytes()).expect("write");
        s.read_exact(&mut buf).expect("read");
    }
    let took = t0.elapsed();
    drop(s);
    let _ = child.wait();
    took / n as u32
}

fn echo(addr: &str) -> ! {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 8];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

fn pods(sim: &Simulator, workers: usize) -> Engine<adparallelengine::backends::k8s::K8sBackend> {
    let b = K8sBuilder::new(workers).kubeconfig(&sim.kubeconfig).image("local/bench").build().expect("k8s backend");
    Engine::from_backend(b)
}

/// Per-item time of `n` unbatched items, strict (`prefetch(1)`) and default, median of 5.
fn per_item<B: adparallelengine::plumbing::Backend>(e: &Engine<B>, n: usize) -> (Duration, Duration) {
    let (mut strict, mut pipelined) = (vec![], vec![]);
    for _ in 0..5 {
        let t0 = Instant::now();
        e.map(Echo, 0..n as u64).batched(false).prefetch(1).run().expect("run");
        strict.push(t0.elapsed() / n as u32);
        let t0 = Instant::now();
        e.map(Echo, 0..n as u64).batched(false).run().expect("run");
        pipelined.push(t0.elapsed() / n as u32);
    }
    (median(strict), median(pipelined))
}

fn bench_a(sim: &Simulator) {
    let n = 20_000;
    let raw = median((0..5).map(|_| raw_round_trip(n)).collect());
    let process = Engine::from_backend(ProcessBackend::new(1).expect("backend"));
    let k8s = pods(sim, 1);
    // Warm: the process started, the pod created and connected.
    process.map(Echo, 0..10u64).run().expect("run");
    k8s.map(Echo, 0..10u64).run().expect("run");
    let (ps, pp) = per_item(&process, n);
    let (ks, kp) = per_item(&k8s, n);
    println!("(a) per-item round trip, unbatched, 1 worker, {n} items");
    println!("    raw TCP ping-pong (loopback)   {raw:>10.2?}   1.00x");
    println!("    process, prefetch 1 (strict)   {ps:>10.2?}   {:.2}x raw", ratio(ps, raw));
    println!("    process, prefetch 2 (default)  {pp:>10.2?}   {:.2}x raw", ratio(pp, raw));
    println!(
        "    k8s, prefetch 1 (strict)       {ks:>10.2?}   {:.2}x raw, {:.2}x process",
        ratio(ks, raw),
        ratio(ks, ps)
    );
    println!(
        "    k8s, prefetch 2 (default)      {kp:>10.2?}   {:.2}x raw, {:.2}x process",
        ratio(kp, raw),
        ratio(kp, pp)
    );
}

fn bench_b(sim: &Simulator) {
    let serial = Engine::builder(Kind::Serial).progress(Progress::quiet()).build().expect("engine");
    let process = Engine::from_backend(ProcessBackend::new(2).expect("backend"));
    let k8s = pods(sim, 2);
    process.map(Echo, 0..10u64).run().expect("run");
    k8s.map(Echo, 0..10u64).run().expect("run");
    let time = |f: &dyn Fn()| {
        let t0 = Instant::now();
        f();
        t0.elapsed()
    };
    let s = time(&|| drop(serial.map(Spin, 0..64u64).batched(false).run().expect("run")));
    let p = time(&|| drop(process.map(Spin, 0..64u64).batched(Batching::Auto).run().expect("run")));
    let k = time(&|| drop(k8s.map(Spin, 0..64u64).batched(Batching::Auto).run().expect("run")));
    println!("(b) 64 CPU-bound items of ~50 ms, 2 workers (pods already connected)");
    println!("    serial                         {s:>10.2?}   1.00x");
    println!("    process                        {p:>10.2?}   {:.2}x speedup", ratio(s, p));
    println!("    k8s                            {k:>10.2?}   {:.2}x speedup", ratio(s, k));
}

fn main() {
    if let Ok(addr) = std::env::var(ECHO_ENV) {
        echo(&addr);
    }
    let sim = Simulator::start(&[]).expect("the local Kubernetes API (python3 tools/k8s-sim/k8s_sim.py)");
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |k: &str| only.as_deref().is_none_or(|o| o == k);
    if want("a") {
        bench_a(&sim);
    }
    if want("b") {
        bench_b(&sim);
    }
}
