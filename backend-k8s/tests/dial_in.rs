//! A worker that dials in: this test binary, re-executed with a driver's address and the
//! run's secret in its environment, becomes a worker before `main`, knocks, serves a job over
//! TCP (the test plays the driver), and exits 0 when the driver closes the connection. With a
//! wrong secret it is refused and exits non-zero.

use adparallelengine_core::remote::dial_in::Door;
use adparallelengine_core::remote::Secret;
use adparallelengine_core::remote::{encode_items, encode_msg, write_parts};
use adparallelengine_core::remote::{fingerprint, ToWorker};
use adparallelengine_core::ShareKey;
use adparallelengine_k8s::dial::{ENV_DRIVER, ENV_NAME, ENV_SECRET};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

adparallelengine_core::task!(Square = |x: u64| -> u64 { x * x });

fn worker(addr: &str, secret: &Secret, name: &str) -> Child {
    // Keep the dial-in entry linked into this test binary.
    std::hint::black_box(adparallelengine_k8s::dial::dial_in_if_asked as fn());
    Command::new(std::env::current_exe().unwrap())
        .env(ENV_DRIVER, addr)
        .env(ENV_SECRET, secret.to_hex())
        .env(ENV_NAME, name)
        .spawn()
        .unwrap()
}

fn send(s: &mut TcpStream, msg: &ToWorker, tail: &[u8]) {
    write_parts(s, &encode_msg(msg).unwrap(), tail).unwrap();
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("worker still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_dialing_worker_knocks_serves_a_job_over_tcp_and_exits_with_its_driver() {
    let secret = Secret::random().unwrap();
    let listener = Door::bind("test", "127.0.0.1:0", secret.clone()).unwrap();
    let addr = listener.addr().to_string();
    let mut child = worker(&addr, &secret, "pod-7");
    let arrival = listener.arrivals().recv_timeout(Duration::from_secs(30)).expect("the worker dialed in");
    assert_eq!(arrival.name, "pod-7");
    let mut d = arrival.stream;
    send(&mut d, &ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: 0 }, &[]);
    // A shared value, sent over the connection, then a job that says so.
    send(&mut d, &ToWorker::Blob { key: ShareKey::of(b"shared") }, b"shared");
    send(&mut d, &ToWorker::Job(adparallelengine_core::remote::testing::job_spec::<Square>(true)), &[]);
    send(&mut d, &ToWorker::Batch { seq: 0, start: 0, count: 4 }, &encode_items(&[1u64, 2, 3, 4]).unwrap());
    send(&mut d, &ToWorker::EndJob, &[]);
    let heard = adparallelengine_core::remote::testing::read_until_job_ended(&mut d.try_clone().unwrap());
    assert!(adparallelengine_core::remote::testing::is_one_job(&heard, &[1, 4, 9, 16]), "{heard:?}");
    // The driver closes: the worker exits 0.
    drop(d);
    assert_eq!(wait(&mut child, Duration::from_secs(30)), Some(0));
    assert_eq!(listener.refused(), 0);
}

#[test]
fn a_worker_with_the_wrong_secret_is_refused_and_exits() {
    let listener = Door::bind("test", "127.0.0.1:0", Secret::random().unwrap()).unwrap();
    let mut child = worker(&listener.addr().to_string(), &Secret::random().unwrap(), "stranger");
    assert_ne!(wait(&mut child, Duration::from_secs(30)), Some(0));
    assert_eq!(listener.refused(), 1);
    assert!(listener.arrivals().try_recv().is_err());
}
