//! Workers that dial in (pods of a Kubernetes Job, reaching their driver over TCP) prove
//! they belong to this run before anything else: the first frame on a connection is a
//! *knock* carrying the run's secret, a random 256-bit value the driver made and gave its
//! workers (in a Kubernetes Secret or the pod's environment).
//!
//! The driver reads the knock under one deadline for the whole knock (its caller's) and a
//! small size bound, so a stranger can neither hold a connection open nor make the driver
//! allocate; the reading never blocks on a non-blocking socket, so one thread can watch many
//! connections knock ([`check_knock`]). It compares secrets in constant time, and refuses (closes) a connection whose knock is wrong, logging who it was.
//! Only then does the worker protocol ([`crate::remote`]) start, with frames bounded by
//! [`crate::remote::wire::DEFAULT_MAX_FRAME`].

use crate::error::{Error, Result};
use crate::remote::wire::{encode_frame, TAIL_APART};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{ErrorKind, Read, Write};

/// Largest knock frame accepted: a secret and a few words.
pub const MAX_KNOCK: usize = 1024;

/// A run's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh random secret, from the operating system (`/dev/urandom`).
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::Config(format!("cannot read /dev/urandom for the run's secret: {e}")))?;
        Ok(Secret(b))
    }

    /// The secret as 64 hex digits, to put in a pod's environment.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A secret written by [`Secret::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut b = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            b[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        }
        Some(Secret(b))
    }

    /// Equality that takes the same time whatever the first differing byte.
    fn same_as(&self, other: &[u8]) -> bool {
        other.len() == self.0.len() && self.0.iter().zip(other).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The first frame of a dialing worker.
#[derive(Debug, Serialize, Deserialize)]
struct Knock {
    secret: Vec<u8>,
    /// Who the worker says it is (a pod name), for the driver's logs.
    name: String,
}

/// Sends the knock (on the worker).
pub fn knock(w: &mut impl Write, secret: &Secret, name: &str) -> Result<()> {
    let frame = encode_frame(&Knock { secret: secret.0.to_vec(), name: name.to_string() })?;
    w.write_all(&frame).map_err(|e| Error::Backend { backend: "remote", message: format!("cannot knock: {e}") })
}

/// The length of a frame's header: its payload's length (little-endian `u64`, with the
/// [`TAIL_APART`] flag bit).
const HEADER: usize = 8;

/// Reads and checks a knock (on the driver), in as many calls as the bytes take to arrive.
///
/// Each call reads what `r` has, never past the knock (the worker protocol follows it on the
/// same stream), keeping the bytes so far in `got`: give each new connection an empty one and
/// pass the same one again on the next call. `Ok(None)`: `r` would block (a non-blocking
/// socket with nothing more yet, or a read timeout) before the knock is whole. `Ok(Some(name))`:
/// the knock is whole and carries the run's secret; `name` is the name the worker gave. An
/// error refuses the connection and names what was wrong, for the log. `got` never holds more
/// than the knock's bound (1 KiB and a header), so a stranger cannot make the driver
/// allocate.
///
/// The deadline is the caller's, one for the whole knock however the peer trickles it: a read
/// timeout on the stream would bound each read, not the knock. (The Kubernetes driver's door
/// reads every connection waiting to knock without blocking, in one `poll(2)` loop.)
pub fn check_knock(r: &mut impl Read, secret: &Secret, got: &mut Vec<u8>) -> Result<Option<String>> {
    let refused = |why: String| Error::Backend { backend: "remote", message: format!("connection refused: {why}") };
    let mut chunk = [0u8; 256];
    loop {
        let want = match got.len() {
            n if n < HEADER => HEADER - n,
            n => {
                let head = header(got);
                let len = head & !TAIL_APART;
                if len > MAX_KNOCK as u64 {
                    return Err(refused(format!(
                        "no valid knock: frame of {len} bytes exceeds the {MAX_KNOCK}-byte limit"
                    )));
                }
                if head & TAIL_APART != 0 {
                    return Err(refused("a frame marked for shared memory".into()));
                }
                HEADER + len as usize - n
            }
        };
        if want == 0 {
            break;
        }
        let n = want.min(chunk.len());
        match r.read(&mut chunk[..n]) {
            Ok(0) if got.is_empty() => return Err(refused("closed before knocking".into())),
            Ok(0) => return Err(refused("no valid knock: the stream ended inside it".into())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
            Err(e) => return Err(refused(format!("no valid knock: {e}"))),
        }
    }
    let knock: Knock = crate::remote::wire::decode(&got[HEADER..]).map_err(|e| refused(format!("not a knock: {e}")))?;
    if !secret.same_as(&knock.secret) {
        return Err(refused(format!("wrong secret from a worker calling itself {:?}", knock.name)));
    }
    Ok(Some(knock.name))
}

/// The header of the frame whose first bytes are `got` (at least [`HEADER`] of them).
fn header(got: &[u8]) -> u64 {
    let mut b = [0u8; HEADER];
    b.copy_from_slice(&got[..HEADER]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole knock from a blocking reader, as one call.
    fn check(r: &mut impl Read, secret: &Secret) -> Result<Option<String>> {
        check_knock(r, secret, &mut Vec::new())
    }

    #[test]
    fn the_right_secret_opens_and_nothing_else_does() {
        let secret = Secret::random().unwrap();
        assert_ne!(secret, Secret::random().unwrap());
        assert_eq!(Secret::from_hex(&secret.to_hex()), Some(secret.clone()));
        assert_eq!(Secret::from_hex("zz"), None);
        assert!(!format!("{secret:?}").contains(&secret.to_hex()), "never logged");

        let mut wire = Vec::new();
        knock(&mut wire, &secret, "pod-a").unwrap();
        assert_eq!(check(&mut &wire[..], &secret).unwrap().as_deref(), Some("pod-a"));

        let other = Secret::random().unwrap();
        let err = check(&mut &wire[..], &other).unwrap_err().to_string();
        assert!(err.contains("wrong secret") && err.contains("pod-a"), "{err}");

        // A stranger's bytes: a huge length, a short read, nothing at all.
        let huge = u64::MAX.to_le_bytes().to_vec();
        assert!(check(&mut &huge[..], &secret).unwrap_err().to_string().contains("refused"));
        let mut big = ((MAX_KNOCK + 1) as u64).to_le_bytes().to_vec();
        big.extend(vec![0u8; MAX_KNOCK + 1]);
        assert!(check(&mut &big[..], &secret).unwrap_err().to_string().contains("limit"));
        let apart = (4 | TAIL_APART).to_le_bytes().to_vec();
        assert!(check(&mut &apart[..], &secret).unwrap_err().to_string().contains("shared memory"));
        assert!(check(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], &secret).is_err());
        assert!(check(&mut &wire[..wire.len() - 1], &secret).unwrap_err().to_string().contains("ended inside"));
        assert!(check(&mut &[][..], &secret).unwrap_err().to_string().contains("closed before knocking"));
    }

    /// Hands out its bytes one at a time, then "would block" (a non-blocking socket).
    struct Trickle<'a> {
        bytes: &'a [u8],
        ready: bool,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if !std::mem::replace(&mut self.ready, false) {
                return Err(ErrorKind::WouldBlock.into());
            }
            match self.bytes.split_first() {
                None => Ok(0),
                Some((b, rest)) => {
                    buf[0] = *b;
                    self.bytes = rest;
                    Ok(1)
                }
            }
        }
    }

    #[test]
    fn a_knock_in_pieces_is_read_without_blocking_and_never_past_its_end() {
        let secret = Secret::random().unwrap();
        let mut wire = Vec::new();
        knock(&mut wire, &secret, "pod-c").unwrap();
        let whole = wire.len();
        wire.extend_from_slice(b"the worker protocol follows");
        let mut r = Trickle { bytes: &wire, ready: false, reads: 0 };
        let mut got = Vec::new();
        let mut calls = 0;
        let name = loop {
            calls += 1;
            assert!(calls <= 2 * whole + 2, "no end to the knock");
            r.ready = true;
            if let Some(name) = check_knock(&mut r, &secret, &mut got).unwrap() {
                break name;
            }
        };
        assert_eq!(name, "pod-c");
        assert_eq!(calls, whole, "one call per byte that arrived");
        assert_eq!(got.len(), whole);
        assert_eq!(r.bytes, b"the worker protocol follows", "nothing read past the knock");
    }

    #[test]
    fn a_knock_over_tcp_and_a_silent_stranger_under_a_read_timeout() {
        let secret = Secret::random().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = secret.clone();
        let worker = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            knock(&mut c, &s, "pod-b").unwrap();
            // A silent stranger, too.
            std::net::TcpStream::connect(addr).unwrap()
        });
        let (mut c, _) = listener.accept().unwrap();
        assert_eq!(check(&mut c, &secret).unwrap().as_deref(), Some("pod-b"));
        let (mut silent, _) = listener.accept().unwrap();
        silent.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(check(&mut silent, &secret).unwrap(), None, "nothing yet: the caller's deadline decides");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        drop(worker.join().unwrap());
    }
}
