//! The original's complete example: its inputs, its expected outputs and its matrix of cells.
//!
//! Six 2×2 integer frames; `method` multiplies each frame by the series `[2, 3]` column-wise,
//! adds the float `5.0` and the per-worker attribute `1` set by `init`, and returns that frame
//! and three times it. The expected numbers are computed here from those constants, not by
//! running any task:
//!
//! ```text
//! out0[r][c] = frame_i[r][c] * SERIES[c] + FLOAT + ATTR
//! out1[r][c] = 3 * out0[r][c]
//! ```
//!
//! One copy for everyone: [`complete_matrix`](super::complete_matrix) checks these numbers
//! in-process, and `cargo xtask test-matrix` checks the tables the `complete` example prints
//! for every kind against the same [`expected_blocks`] over the same [`matrix_cells`].

use crate::Batching;

/// The input frames, as rows.
pub const FRAMES: [[[i64; 2]; 2]; 6] = [
    [[0, 1], [2, 3]],
    [[4, 5], [6, 7]],
    [[8, 9], [10, 11]],
    [[12, 13], [14, 15]],
    [[16, 17], [18, 19]],
    [[21, 22], [23, 24]],
];
/// The series multiplied column-wise into each frame (`some_other_stuff`).
pub const SERIES: [i64; 2] = [2, 3];
/// The float added to every value (`some_float`).
pub const FLOAT: f64 = 5.0;
/// The per-worker attribute `init` sets (the original's `Dummy.some_attr`), added to every value.
pub const ATTR: i64 = 1;
/// Number of input items.
pub const ITEMS: usize = FRAMES.len();
/// Column names of every frame, in order.
pub const COLUMNS: [&str; 2] = ["0", "1"];
/// Largest accepted difference between an output value and its expected value.
pub const TOLERANCE: f64 = 1e-9;

/// Values of the GATHER argument, in run order.
pub const GATHER: [bool; 2] = [true, false];
/// Values of the BATCHED argument, in run order: `False`, `True`, `16`, `auto`.
pub const BATCHED: [Batching; 4] = [Batching::None, Batching::PerWorker, Batching::Batches(16), Batching::Auto];
/// Values of the SHARE argument, in run order.
pub const SHARE: [bool; 2] = [true, false];
/// Values of the GENERATOR argument, in run order.
pub const GENERATOR: [bool; 2] = [true, false];
/// Values of the MAX_WORKERS argument, in run order: the engine's default (`None`), then 1.
pub const MAX_WORKERS: [Option<usize>; 2] = [None, Some(1)];

/// One 2×2 table of values, by row then column.
pub type Table = [[f64; 2]; 2];

/// The two outputs (`out0`, `out1`) of item `i`; `None` past the last item.
pub fn expected_outputs(i: usize) -> Option<[Table; 2]> {
    let frame = FRAMES.get(i)?;
    let mut out0 = [[0.0; 2]; 2];
    for (r, row) in frame.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out0[r][c] = (x * SERIES[c]) as f64 + FLOAT + ATTR as f64;
        }
    }
    let out1 = out0.map(|row| row.map(|v| 3.0 * v));
    Some([out0, out1])
}

/// One expected output table: its header as the example prints it, and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedBlock {
    /// `frame K` (gathered: frame `2i` is `out0` of item `i`, `2i + 1` its `out1`) or
    /// `item I (J)` (not gathered).
    pub header: String,
    /// Values by row, then column.
    pub values: Table,
}

/// Every expected output table of one run, in order: twelve, whether gathered or not.
pub fn expected_blocks(gather: bool) -> Vec<ExpectedBlock> {
    let mut blocks = Vec::with_capacity(2 * ITEMS);
    for i in 0..ITEMS {
        for (j, values) in expected_outputs(i).into_iter().flatten().enumerate() {
            let header = if gather { format!("frame {}", 2 * i + j) } else { format!("item {i} ({j})") };
            blocks.push(ExpectedBlock { header, values });
        }
    }
    blocks
}

/// `True` or `False`, as the original (and the `complete` example) spell them.
pub fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The BATCHED argument spelling a batching mode: `False`, `True`, a number, `auto`
/// (`chunk:N` for a chunk size).
pub fn batched_arg(b: Batching) -> String {
    match b {
        Batching::None => "False".into(),
        Batching::PerWorker => "True".into(),
        Batching::Batches(n) => n.to_string(),
        Batching::ChunkSize(c) => format!("chunk:{c}"),
        Batching::Auto => "auto".into(),
    }
}

/// One cell of the matrix: the complete example's arguments, without the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixCell {
    /// GATHER: `gather()` (a flat list of frames) instead of `run()` (a list of pairs).
    pub gather: bool,
    /// BATCHED.
    pub batched: Batching,
    /// SHARE: the series travels in a [`Shared`](crate::Shared) instead of plainly in the args.
    pub share: bool,
    /// GENERATOR: items come from a generator with `.length(n)` instead of a `Vec`.
    pub generator: bool,
    /// MAX_WORKERS: `None` for the engine's default.
    pub max_workers: Option<usize>,
}

impl MatrixCell {
    /// The example's arguments after KIND: `GATHER BATCHED SHARE GENERATOR MAX_WORKERS`.
    pub fn args(&self) -> [String; 5] {
        [
            py_bool(self.gather).into(),
            batched_arg(self.batched),
            py_bool(self.share).into(),
            py_bool(self.generator).into(),
            self.max_workers_arg(),
        ]
    }

    /// The MAX_WORKERS argument: `default` or the number.
    pub fn max_workers_arg(&self) -> String {
        self.max_workers.map_or_else(|| "default".to_string(), |n| n.to_string())
    }

    /// The expected output tables of this cell, in order.
    pub fn expected(&self) -> Vec<ExpectedBlock> {
        expected_blocks(self.gather)
    }
}

impl std::fmt::Display for MatrixCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gather={} batched={} share={} generator={} max_workers={}",
            py_bool(self.gather),
            batched_arg(self.batched),
            py_bool(self.share),
            py_bool(self.generator),
            self.max_workers_arg()
        )
    }
}

/// Every cell of the matrix (64: GATHER × BATCHED × SHARE × GENERATOR × MAX_WORKERS), in run
/// order, the last argument varying fastest.
pub fn matrix_cells() -> Vec<MatrixCell> {
    let mut out = Vec::with_capacity(64);
    for gather in GATHER {
        for batched in BATCHED {
            for share in SHARE {
                for generator in GENERATOR {
                    for max_workers in MAX_WORKERS {
                        out.push(MatrixCell { gather, batched, share, generator, max_workers });
                    }
                }
            }
        }
    }
    out
}

/// Compares output tables with the expected ones; the error names the first wrong table (by
/// its header and its item index), the cell and the value.
pub(crate) fn compare_blocks(expected: &[ExpectedBlock], got: &[Table]) -> Result<(), super::Problem> {
    use super::Problem;
    for (k, (exp, table)) in expected.iter().zip(got).enumerate() {
        for r in 0..2 {
            for c in 0..2 {
                let (want, v) = (exp.values[r][c], table[r][c]);
                // Written so that a NaN fails too.
                let close = (v - want).abs() < TOLERANCE;
                if !close {
                    return Err(Problem::Output {
                        index: k / 2,
                        expected: format!("{}[{r}][{c}] = {want:?}", exp.header),
                        got: format!("{v:?} (table {table:?})"),
                    });
                }
            }
        }
    }
    if expected.len() != got.len() {
        return Err(Problem::Count { expected: expected.len(), got: got.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values() {
        let b = expected_blocks(true);
        assert_eq!(b.len(), 12);
        assert_eq!(b[8].header, "frame 8");
        assert_eq!(b[8].values, [[38.0, 57.0], [42.0, 63.0]]);
        assert_eq!(b[9].values, [[114.0, 171.0], [126.0, 189.0]]);
        let b = expected_blocks(false);
        assert_eq!(b[11].header, "item 5 (1)");
        assert_eq!(b[10].values, [[48.0, 72.0], [52.0, 78.0]]);
        assert_eq!(expected_outputs(ITEMS), None);
    }

    #[test]
    fn sixty_four_distinct_cells() {
        let cs = matrix_cells();
        assert_eq!(cs.len(), 64);
        assert_eq!(cs[0].args(), ["True", "False", "True", "True", "default"]);
        assert_eq!(cs[63].args(), ["False", "auto", "False", "False", "1"]);
        let mut all: Vec<_> = cs.iter().map(MatrixCell::args).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 64);
        // Every BATCHED spelling parses back to its mode.
        for b in BATCHED {
            assert_eq!(batched_arg(b).parse::<Batching>().ok(), Some(b));
        }
    }

    /// The comparison cannot pass vacuously: a wrong value, a missing table, a NaN fail.
    #[test]
    fn wrong_tables_fail() {
        let exp = expected_blocks(true);
        let good: Vec<Table> = exp.iter().map(|b| b.values).collect();
        compare_blocks(&exp, &good).unwrap();
        let mut bad = good.clone();
        bad[9][0][0] += 0.5;
        match compare_blocks(&exp, &bad) {
            Err(super::super::Problem::Output { index: 4, expected, .. }) => {
                assert!(expected.contains("frame 9[0][0]"))
            }
            other => panic!("{other:?}"),
        }
        let mut nan = good.clone();
        nan[0][1][1] = f64::NAN;
        assert!(compare_blocks(&exp, &nan).is_err());
        match compare_blocks(&exp, &good[..11]) {
            Err(super::super::Problem::Count { expected: 12, got: 11 }) => {}
            other => panic!("{other:?}"),
        }
        // Not gathered: the same values under other headers, so a swapped pair fails.
        let exp = expected_blocks(false);
        let mut swapped = good;
        swapped.swap(4, 5);
        assert!(compare_blocks(&exp, &swapped).is_err());
    }
}
