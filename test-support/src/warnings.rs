//! The warnings a test's driver logs (through `tracing`), captured in memory, for tests that
//! check the reason the driver gives (a worker stopped as misbehaving, say).

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_ansi(false)
            .with_writer(move || Captured(Arc::clone(&sink)))
            .try_init();
        assert!(installed.is_ok(), "the log is captured (no other subscriber in this test binary)");
        buf
    })
}

fn locked() -> MutexGuard<'static, Vec<u8>> {
    log().lock().unwrap_or_else(|e| e.into_inner())
}

struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing this process's warnings (once; later calls do nothing). Call it before
/// anything logs.
pub fn capture() {
    log();
}

/// Bytes captured so far: a mark for [`since`].
pub fn mark() -> usize {
    locked().len()
}

/// Every warning captured so far.
pub fn all() -> String {
    since(0)
}

/// The warnings captured from the byte `mark` on.
pub fn since(mark: usize) -> String {
    String::from_utf8_lossy(locked().get(mark..).unwrap_or_default()).into_owned()
}
