//! A worker's connection over a plain byte stream (a TCP connection to its driver):
//! engine-core's frames, each bounded in size, so a bad peer cannot make the worker allocate.

use crate::remote::wire::{read_frame_into, write_parts};
use crate::remote::{Incoming, Transport};
use std::io::{self, BufReader, Read, Write};

/// The worker's end of a stream connection.
///
/// ```no_run
/// use adparallelengine_core::remote::StreamTransport;
/// let stream = std::net::TcpStream::connect("10.0.0.5:7777")?;
/// let mut t = StreamTransport::new(stream.try_clone()?, stream, adparallelengine_core::remote::DEFAULT_MAX_FRAME);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct StreamTransport<R: Read, W: Write> {
    reader: BufReader<R>,
    writer: W,
    buf: Vec<u8>,
    max: usize,
}

impl<R: Read, W: Write> StreamTransport<R, W> {
    /// A transport reading frames of at most `max` bytes from `reader`, writing to `writer`.
    pub fn new(reader: R, writer: W, max: usize) -> Self {
        StreamTransport { reader: BufReader::with_capacity(1 << 16, reader), writer, buf: Vec::new(), max }
    }
}

impl<R: Read, W: Write> Transport for StreamTransport<R, W> {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        write_parts(&mut self.writer, head, tail)?;
        self.writer.flush()
    }

    fn recv(&mut self) -> io::Result<Option<Incoming<'_>>> {
        match read_frame_into(&mut self.reader, self.max, &mut self.buf)? {
            None => Ok(None),
            Some(false) => Ok(Some(Incoming { payload: &self.buf, bulk: None })),
            Some(true) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, "a frame marked for shared memory on a stream"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::wire::{encode_items, encode_msg};
    use crate::remote::{serve_connection, ToWorker};
    use crate::store::SharedStore;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    crate::task!(Triple = |x: u64| -> u64 { 3 * x });

    fn send(s: &mut TcpStream, msg: &ToWorker, tail: &[u8]) {
        write_parts(s, &encode_msg(msg).unwrap(), tail).unwrap();
    }

    #[test]
    fn a_worker_serves_a_job_over_tcp_and_bounds_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = std::thread::spawn(move || {
            let c = TcpStream::connect(addr).unwrap();
            let mut t = StreamTransport::new(c.try_clone().unwrap(), c, 1 << 20);
            let none = |_: &str| -> crate::Result<Arc<dyn SharedStore>> { Err(crate::Error::Store("none".into())) };
            let no_local = || -> crate::Result<Arc<dyn SharedStore>> { Err(crate::Error::Store("none".into())) };
            serve_connection(&mut t, &none, &no_local)
        });
        let (mut d, _) = listener.accept().unwrap();
        send(&mut d, &ToWorker::Hello { fingerprint: crate::remote::fingerprint().to_string(), worker: 0 }, &[]);
        send(&mut d, &ToWorker::Job(crate::remote::testing::job_spec::<Triple>(false)), &[]);
        send(&mut d, &ToWorker::Batch { seq: 0, start: 0, count: 3 }, &encode_items(&[1u64, 2, 3]).unwrap());
        send(&mut d, &ToWorker::EndJob, &[]);
        let heard = crate::remote::testing::read_until_job_ended(&mut d.try_clone().unwrap());
        assert!(crate::remote::testing::is_one_job(&heard, &[3, 6, 9]), "{heard:?}");
        // A frame over the bound ends the connection with an error, before any allocation.
        d.write_all(&(u64::MAX >> 1).to_le_bytes()).unwrap();
        let err = worker.join().unwrap().unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }
}
