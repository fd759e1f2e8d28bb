//! Running one child process with a timeout, capturing its stdout and stderr.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(10);
/// How long to wait for the output pipes to close once the child has exited or been killed
/// (a grandchild may still hold them open).
const DRAIN: Duration = Duration::from_secs(5);

/// How one run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status, or None when the child was killed on timeout.
    pub status: Option<ExitStatus>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// Wall time from spawn to exit (or kill).
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the child was killed because it ran past the timeout.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A short description of how the child ended: `timeout`, `exit code N` or `signal`.
    pub fn describe(&self) -> String {
        match self.status {
            None => "timeout".to_string(),
            Some(s) => match s.code() {
                Some(c) => format!("exit code {c}"),
                None => format!("killed ({s})"),
            },
        }
    }
}

/// Reads a pipe to its end on a helper thread; the text arrives on the returned channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A read error just ends the capture; whatever was read is kept.
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Waits for `child` until `timeout`, killing it past that. None on timeout.
fn wait(child: &mut Child, start: Instant, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= timeout {
            // The child may have exited just now: then kill fails harmlessly.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured), killing it after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> std::io::Result<Outcome> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait(&mut child, start, timeout)?;
    let elapsed = start.elapsed();
    let stdout = out.recv_timeout(DRAIN).unwrap_or_default();
    let stderr = err.recv_timeout(DRAIN).unwrap_or_default();
    Ok(Outcome { status, stdout, stderr, elapsed })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn captures_output_and_status() {
        let o = run(sh("echo out; echo err >&2; exit 3"), Duration::from_secs(30)).unwrap();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.success());
        assert_eq!(o.describe(), "exit code 3");
    }

    #[test]
    fn kills_on_timeout() {
        let o = run(sh("echo started; exec sleep 30"), Duration::from_millis(300)).unwrap();
        assert!(o.timed_out());
        assert_eq!(o.describe(), "timeout");
        assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
    }
}
