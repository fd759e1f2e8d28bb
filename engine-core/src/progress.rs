//! Progress: `tracing` lines every N percent (the Python original's `print_percent`) and an `indicatif`
//! bar on stderr when it is a terminal.

use indicatif::{ProgressBar as IndicatifBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// When to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressBar {
    /// On stderr when it is a terminal, once a job has run for half a second (short jobs and
    /// test runs stay quiet). `ADPARALLELENGINE_PROGRESS=never|always` overrides it.
    #[default]
    Auto,
    /// Always (still only on a terminal).
    Always,
    /// Never.
    Never,
}

/// Progress reporting of an engine's jobs.
///
/// ```
/// use adparallelengine_core::{Progress, ProgressBar};
/// let quiet = Progress { log_every_percent: None, bar: ProgressBar::Never };
/// assert_eq!(Progress::quiet(), quiet);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Log a `tracing` INFO line (target `adparallelengine::progress`) each time this many
    /// more percent of the items are done. Needs a known length. `None`: no lines.
    pub log_every_percent: Option<u8>,
    /// The bar.
    pub bar: ProgressBar,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { log_every_percent: Some(10), bar: ProgressBar::Auto }
    }
}

impl Progress {
    /// No lines, no bar.
    pub fn quiet() -> Self {
        Progress { log_every_percent: None, bar: ProgressBar::Never }
    }
}

const BAR_DELAY: Duration = Duration::from_millis(500);

/// Progress of one job.
pub(crate) struct Tracker {
    total: Option<usize>,
    done: usize,
    every: Option<u8>,
    next_log_pct: u64,
    bar_mode: ProgressBar,
    bar: Option<IndicatifBar>,
    started: Instant,
    backend: &'static str,
}

impl Tracker {
    pub(crate) fn new(config: Progress, total: Option<usize>, backend: &'static str) -> Self {
        let bar_mode = match std::env::var("ADPARALLELENGINE_PROGRESS").as_deref() {
            Ok("never") | Ok("0") => ProgressBar::Never,
            Ok("always") => ProgressBar::Always,
            _ => config.bar,
        };
        // Asked only when a bar may be drawn: `isatty` is a system call per job.
        let bar_mode = if bar_mode != ProgressBar::Never && std::io::stderr().is_terminal() {
            bar_mode
        } else {
            ProgressBar::Never
        };
        let every = config.log_every_percent.filter(|p| *p > 0 && total.is_some());
        Tracker {
            total,
            done: 0,
            every,
            next_log_pct: every.map(u64::from).unwrap_or(u64::MAX),
            bar_mode,
            bar: None,
            started: Instant::now(),
            backend,
        }
    }

    /// Whether advancing shows anything (a log line every so many percent, or a bar): if
    /// not, advances can be told in bulk at the end.
    pub(crate) fn is_live(&self) -> bool {
        self.every.is_some() || self.bar_mode != ProgressBar::Never
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.done += n;
        if let (Some(every), Some(total)) = (self.every, self.total) {
            let pct = (self.done as u64 * 100).checked_div(total as u64).unwrap_or(100);
            if pct >= self.next_log_pct {
                tracing::info!(
                    target: "adparallelengine::progress",
                    backend = self.backend,
                    "{}/{} items done ({}%)",
                    self.done,
                    total,
                    pct
                );
                self.next_log_pct = (pct / u64::from(every) + 1) * u64::from(every);
            }
        }
        self.draw();
    }

    fn draw(&mut self) {
        if self.bar.is_none() {
            let show = match self.bar_mode {
                ProgressBar::Never => false,
                ProgressBar::Always => true,
                ProgressBar::Auto => self.started.elapsed() >= BAR_DELAY,
            };
            if !show {
                return;
            }
            let bar = match self.total {
                Some(t) => IndicatifBar::with_draw_target(Some(t as u64), ProgressDrawTarget::stderr()),
                None => IndicatifBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
            {
                bar.set_style(style);
            }
            bar.set_prefix(self.backend);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_every_ten_percent() {
        let mut t = Tracker::new(Progress { log_every_percent: Some(10), bar: ProgressBar::Never }, Some(200), "test");
        let mut logged = vec![];
        for _ in 0..200 {
            let before = t.next_log_pct;
            t.advance(1);
            if t.next_log_pct != before {
                logged.push(before);
            }
        }
        assert_eq!(logged, (1..=10).map(|k| k * 10).collect::<Vec<_>>());
    }
}
