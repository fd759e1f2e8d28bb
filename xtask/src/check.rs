//! Checking the output of the `complete` example against the conformance kit's expected values.
//!
//! The expected numbers and their headers come from `adparallelengine::conformance` (one copy,
//! which the kit also checks in-process on every backend), computed there from the example's
//! constants, not by running its code: for item `i`,
//!
//! ```text
//! out0[r][c] = df_i[r][c] * s[c] + 5.0 + 1.0
//! out1[r][c] = 3 * out0[r][c]
//! ```
//!
//! With `GATHER=True` the example prints twelve blocks `frame K:` (frame `2i` is `out0` of item
//! `i`, frame `2i + 1` its `out1`); with `GATHER=False` it prints `item I (J):` blocks. Each
//! header is followed by an arrow pretty table whose first `|` row holds the column names and
//! whose following `|` rows hold the data. The last line is the `done: ...` summary.

pub use adparallelengine::conformance::{expected_blocks, ExpectedBlock, ITEMS};
use adparallelengine::conformance::{COLUMNS, TOLERANCE};

/// What the example is expected to report on its `done:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// `GATHER`.
    pub gather: bool,
    /// The `KIND` argument (canonical name).
    pub kind: String,
    /// The backend name that must be reported.
    pub backend: String,
}

impl Expectation {
    /// The expectation for one run: the backend is `serial` when `max_workers` is `1` or the
    /// kind is `serial`, the kind itself otherwise; `mpi` is always `mpi` (its ranks exist
    /// whatever `max_workers` says, so one of them runs the job).
    pub fn new(kind: &str, gather: bool, max_workers: &str) -> Expectation {
        let backend = if (max_workers == "1" && kind != "mpi") || kind == "serial" { "serial" } else { kind };
        Expectation { gather, kind: kind.to_string(), backend: backend.to_string() }
    }
}

/// One printed table, as parsed from stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Header without the trailing colon.
    pub header: String,
    /// 1-based stdout line of the header.
    pub line: usize,
    /// Cells of the first `|` row, trimmed (None if the table had no `|` row).
    pub columns: Option<Vec<String>>,
    /// Cells of the following `|` rows, trimmed.
    pub rows: Vec<Vec<String>>,
}

/// The parsed stdout of one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Tables, in printed order.
    pub blocks: Vec<Block>,
    /// The last non-empty line, if it is a `done:` line.
    pub done: Option<String>,
}

/// Whether `line` is a block header (`frame K:` or `item I (J):`); returns it without the colon.
fn header(line: &str) -> Option<&str> {
    let h = line.strip_suffix(':')?;
    if let Some(k) = h.strip_prefix("frame ") {
        return (!k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())).then_some(h);
    }
    let rest = h.strip_prefix("item ")?;
    let (i, j) = rest.split_once(' ')?;
    let j = j.strip_prefix('(')?.strip_suffix(')')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(i) && digits(j)).then_some(h)
}

/// The trimmed cells of a `| a | b |` row.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// Splits stdout into tables and the final `done:` line. Errors on a line that belongs to no
/// table (blank lines are ignored).
pub fn parse(stdout: &str) -> Result<Parsed, String> {
    let lines: Vec<(usize, &str)> =
        stdout.lines().enumerate().map(|(n, l)| (n + 1, l.trim_end())).filter(|(_, l)| !l.is_empty()).collect();
    let mut parsed = Parsed::default();
    let body = match lines.last() {
        Some((_, last)) if last.starts_with("done:") => {
            parsed.done = Some(last.to_string());
            &lines[..lines.len() - 1]
        }
        _ => &lines[..],
    };
    for &(n, line) in body {
        if let Some(h) = header(line) {
            parsed.blocks.push(Block { header: h.to_string(), line: n, columns: None, rows: Vec::new() });
            continue;
        }
        let block = match parsed.blocks.last_mut() {
            Some(b) if line.starts_with('+') || line.starts_with('|') => b,
            _ => return Err(format!("unexpected line {n}: {line:?}")),
        };
        if line.starts_with('|') {
            if block.columns.is_none() {
                block.columns = Some(cells(line));
            } else {
                block.rows.push(cells(line));
            }
        }
    }
    Ok(parsed)
}

/// Value of the `key=` field of a `done:` line.
fn field<'a>(done: &'a str, key: &str) -> Option<&'a str> {
    done.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Checks the stdout of one run; the error is a short reason.
pub fn check_output(stdout: &str, want: &Expectation) -> Result<(), String> {
    let parsed = parse(stdout)?;
    let expected = expected_blocks(want.gather);
    for (k, exp) in expected.iter().enumerate() {
        let Some(got) = parsed.blocks.get(k) else {
            return Err(format!(
                "missing `{}:` ({} of {} blocks printed)",
                exp.header,
                parsed.blocks.len(),
                expected.len()
            ));
        };
        if got.header != exp.header {
            return Err(format!("block {k}: got `{}:` (line {}), want `{}:`", got.header, got.line, exp.header));
        }
        check_block(got, exp)?;
    }
    if let Some(extra) = parsed.blocks.get(expected.len()) {
        return Err(format!(
            "{} blocks, want {}; extra `{}:` at line {}",
            parsed.blocks.len(),
            expected.len(),
            extra.header,
            extra.line
        ));
    }
    let done = parsed.done.ok_or_else(|| "no `done:` line at the end of stdout".to_string())?;
    check_done(&done, want)
}

/// Checks one table against its expected values.
fn check_block(got: &Block, exp: &ExpectedBlock) -> Result<(), String> {
    let h = &exp.header;
    match &got.columns {
        Some(cols) if cols.iter().map(String::as_str).eq(COLUMNS) => {}
        Some(cols) => return Err(format!("{h}: columns {cols:?}, want {COLUMNS:?}")),
        None => return Err(format!("{h}: no table")),
    }
    if got.rows.len() != exp.values.len() {
        return Err(format!("{h}: {} data rows, want {}", got.rows.len(), exp.values.len()));
    }
    for (r, (row, want_row)) in got.rows.iter().zip(&exp.values).enumerate() {
        if row.len() != want_row.len() {
            return Err(format!("{h}: row {r} has {} cells, want {}", row.len(), want_row.len()));
        }
        for (c, (cell, &want)) in row.iter().zip(want_row).enumerate() {
            let v: f64 = cell.parse().map_err(|_| format!("{h}[{r}][{c}]: not a number: {cell:?}"))?;
            // Written so that a NaN fails too.
            let close = (v - want).abs() < TOLERANCE;
            if !close {
                return Err(format!("{h}[{r}][{c}]: got {cell}, want {want:?}"));
            }
        }
    }
    Ok(())
}

/// Checks the final `done: kind=.. backend=.. workers=.. items=.. batches=..` line.
fn check_done(done: &str, want: &Expectation) -> Result<(), String> {
    let items = ITEMS.to_string();
    let checks = [("kind", want.kind.as_str()), ("backend", want.backend.as_str()), ("items", items.as_str())];
    for (key, value) in checks {
        match field(done, key) {
            Some(v) if v == value => {}
            Some(v) => return Err(format!("done line: {key}={v}, want {key}={value}")),
            None => return Err(format!("done line has no {key}=: {done:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats one table as arrow's pretty printer does (widths need not match exactly).
    fn table(values: &[[f64; 2]; 2]) -> String {
        let sep = "+------+------+";
        let mut s = format!("{sep}\n| 0    | 1    |\n{sep}\n");
        for row in values {
            s.push_str(&format!("| {:?} | {:?} |\n", row[0], row[1]));
        }
        s.push_str(sep);
        s
    }

    /// A complete, correct stdout.
    fn good(gather: bool, backend: &str) -> String {
        let mut s = String::new();
        for b in expected_blocks(gather) {
            s.push_str(&format!("{}:\n{}\n", b.header, table(&b.values)));
        }
        s.push_str(&format!("done: kind=threads backend={backend} workers=2 items=6 batches=6\n"));
        s
    }

    fn want(gather: bool, max_workers: &str) -> Expectation {
        Expectation::new("threads", gather, max_workers)
    }

    #[test]
    fn passing_output() {
        check_output(&good(true, "threads"), &want(true, "default")).unwrap();
        check_output(&good(false, "threads"), &want(false, "default")).unwrap();
        check_output(&good(false, "serial"), &want(false, "1")).unwrap();
    }

    #[test]
    fn real_arrow_widths() {
        let out = "frame 0:\n+------+------+\n| 0    | 1    |\n+------+------+\n| 6.0  | 9.0  |\n\
                   | 10.0 | 15.0 |\n+------+------+\n";
        let p = parse(out).unwrap();
        assert_eq!(p.blocks.len(), 1);
        assert_eq!(p.blocks[0].columns.as_deref(), Some(&["0".into(), "1".into()][..]));
        assert_eq!(p.blocks[0].rows[1], vec!["10.0".to_string(), "15.0".to_string()]);
        assert_eq!(p.done, None);
    }

    #[test]
    fn wrong_number() {
        let out = good(true, "threads").replace("| 114.0 |", "| 114.5 |");
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("frame 9[0][0]"), "{err}");
        let out = good(true, "threads").replace("| 38.0 |", "| abc |");
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn missing_frame() {
        let full = good(true, "threads");
        let start = full.find("frame 11:").unwrap();
        let end = full.find("done:").unwrap();
        let out = format!("{}{}", &full[..start], &full[end..]);
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("missing `frame 11:`"), "{err}");
        let err = check_output("", &want(false, "default")).unwrap_err();
        assert!(err.contains("missing `item 0 (0):`"), "{err}");
    }

    #[test]
    fn wrong_order() {
        let out = good(false, "threads")
            .replace("item 2 (0):", "SWAP:")
            .replace("item 2 (1):", "item 2 (0):")
            .replace("SWAP:", "item 2 (1):");
        let err = check_output(&out, &want(false, "default")).unwrap_err();
        assert!(err.contains("got `item 2 (1):`"), "{err}");
    }

    #[test]
    fn gather_mismatch() {
        let err = check_output(&good(false, "threads"), &want(true, "default")).unwrap_err();
        assert!(err.contains("want `frame 0:`"), "{err}");
    }

    #[test]
    fn bad_done_line() {
        let err = check_output(&good(true, "threads"), &want(true, "1")).unwrap_err();
        assert!(err.contains("backend=threads, want backend=serial"), "{err}");
        let out = good(true, "threads").replace("items=6", "items=5");
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("items=5"), "{err}");
        let full = good(true, "threads");
        let out = &full[..full.find("done:").unwrap()];
        let err = check_output(out, &want(true, "default")).unwrap_err();
        assert!(err.contains("no `done:` line"), "{err}");
    }

    #[test]
    fn wrong_columns_and_stray_lines() {
        let out = good(true, "threads").replacen("| 0    | 1    |", "| a    | 1    |", 1);
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("columns"), "{err}");
        let out = format!("hello\n{}", good(true, "threads"));
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("unexpected line 1"), "{err}");
    }

    #[test]
    fn extra_block() {
        let full = good(true, "threads");
        let end = full.find("done:").unwrap();
        let out = format!("{}frame 12:\n{}\n{}", &full[..end], table(&[[0.0; 2]; 2]), &full[end..]);
        let err = check_output(&out, &want(true, "default")).unwrap_err();
        assert!(err.contains("extra `frame 12:`"), "{err}");
    }
}
