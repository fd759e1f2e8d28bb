//! Workers that dial in (pods of a Kubernetes Job, reaching their driver over TCP) prove
//! they belong to this run before anything else: the first frame on a connection is a
//! *knock* carrying the run's secret, a random 256-bit value the driver made and gave its
//! workers (in a Kubernetes Secret or the pod's environment).
//!
//! The driver reads the knock with a deadline and a small size bound, so a stranger can
//! neither hold a connection open nor make the driver allocate; it compares secrets in
//! constant time, and refuses (closes) a connection whose knock is wrong, logging who it was.
//! Only then does the worker protocol ([`crate::remote`]) start, with frames bounded by
//! [`crate::remote::wire::DEFAULT_MAX_FRAME`].

use crate::error::{Error, Result};
use crate::remote::wire::{encode_frame, read_frame_into};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{Read, Write};

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

/// Reads and checks a knock (on the driver; give the stream a read timeout first). Returns
/// the name the worker gave; an error names what was wrong, for the log.
pub fn check_knock(r: &mut impl Read, secret: &Secret) -> Result<String> {
    let refused = |why: String| Error::Backend { backend: "remote", message: format!("connection refused: {why}") };
    let mut buf = Vec::new();
    match read_frame_into(r, MAX_KNOCK, &mut buf) {
        Ok(Some(false)) => {}
        Ok(Some(true)) => return Err(refused("a frame marked for shared memory".into())),
        Ok(None) => return Err(refused("closed before knocking".into())),
        Err(e) => return Err(refused(format!("no valid knock: {e}"))),
    }
    let knock: Knock = crate::remote::wire::decode(&buf).map_err(|e| refused(format!("not a knock: {e}")))?;
    if !secret.same_as(&knock.secret) {
        return Err(refused(format!("wrong secret from a worker calling itself {:?}", knock.name)));
    }
    Ok(knock.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_secret_opens_and_nothing_else_does() {
        let secret = Secret::random().unwrap();
        assert_ne!(secret, Secret::random().unwrap());
        assert_eq!(Secret::from_hex(&secret.to_hex()), Some(secret.clone()));
        assert_eq!(Secret::from_hex("zz"), None);
        assert!(!format!("{secret:?}").contains(&secret.to_hex()), "never logged");

        let mut wire = Vec::new();
        knock(&mut wire, &secret, "pod-a").unwrap();
        assert_eq!(check_knock(&mut &wire[..], &secret).unwrap(), "pod-a");

        let other = Secret::random().unwrap();
        let err = check_knock(&mut &wire[..], &other).unwrap_err().to_string();
        assert!(err.contains("wrong secret") && err.contains("pod-a"), "{err}");

        // A stranger's bytes: a huge length, a short read, nothing at all.
        let huge = u64::MAX.to_le_bytes().to_vec();
        assert!(check_knock(&mut &huge[..], &secret).unwrap_err().to_string().contains("refused"));
        let mut big = ((MAX_KNOCK + 1) as u64).to_le_bytes().to_vec();
        big.extend(vec![0u8; MAX_KNOCK + 1]);
        assert!(check_knock(&mut &big[..], &secret).unwrap_err().to_string().contains("limit"));
        assert!(check_knock(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], &secret).is_err());
        assert!(check_knock(&mut &[][..], &secret).unwrap_err().to_string().contains("closed before knocking"));
    }

    #[test]
    fn a_knock_over_tcp_with_a_deadline() {
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
        assert_eq!(check_knock(&mut c, &secret).unwrap(), "pod-b");
        let (mut silent, _) = listener.accept().unwrap();
        silent.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
        let t0 = std::time::Instant::now();
        assert!(check_knock(&mut silent, &secret).is_err());
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        drop(worker.join().unwrap());
    }
}
