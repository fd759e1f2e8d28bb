//! The kit's tasks. They are registered types, so every process running the same binary (a
//! re-executed worker, another MPI rank, a pod) finds them by name.

use crate::arrow::{Frame, Series};
use crate::{BoxError, Shared, Task};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The delay of item `x` in [`Uneven`]: 0 to 10 ms, early items slower than late ones, so a
/// backend that returns results in completion order gets them out of order.
pub(crate) fn uneven_delay(x: u64) -> Duration {
    Duration::from_millis((40u64.saturating_sub(x) * 7) % 11)
}

crate::task!(
    /// Sleeps [`uneven_delay`], then returns `3x + 1`.
    pub(crate) Uneven = |x: u64| -> u64 {
        std::thread::sleep(uneven_delay(x));
        x.wrapping_mul(3).wrapping_add(1)
    }
);

crate::task!(
    /// `[x, 10x + 1]`, for gather.
    pub(crate) Pair = |x: u64| -> [u64; 2] { [x, x.wrapping_mul(10).wrapping_add(1)] }
);

crate::try_task!(
    /// Fails (returns `Err`) on the item equal to its args, returns `x + 1` otherwise.
    pub(crate) FailAt = |x: u64, bad: &u64| -> u64 {
        if x == *bad {
            return Err(format!("conformance kit: item {x} fails on purpose").into());
        }
        Ok(x + 1)
    }
);

crate::task!(
    /// Panics on the item equal to its args, returns `x + 1` otherwise.
    pub(crate) PanicAt = |x: u64, bad: &u64| -> u64 {
        if x == *bad {
            panic!("conformance kit: item {x} panics on purpose");
        }
        x + 1
    }
);

/// What [`Mixed`] does with item `x`: `Ok(2x)`, an `Err` (`x % 3 == 1`) or a panic
/// (`x % 5 == 4`, when not an `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MixedFate {
    /// Returns `Ok(2x)`.
    Ok(u64),
    /// Returns `Err`.
    Err,
    /// Panics.
    Panic,
}

/// See [`MixedFate`]; computed independently by the check.
pub(crate) fn mixed_fate(x: u64) -> MixedFate {
    if x % 3 == 1 {
        MixedFate::Err
    } else if x % 5 == 4 {
        MixedFate::Panic
    } else {
        MixedFate::Ok(2 * x)
    }
}

crate::try_task!(
    /// Succeeds, fails or panics by item (see [`mixed_fate`]'s rule, written out again here).
    pub(crate) Mixed = |x: u64| -> u64 {
        if x % 3 == 1 {
            return Err(format!("conformance kit: item {x} fails on purpose").into());
        }
        if x % 5 == 4 {
            panic!("conformance kit: item {x} panics on purpose");
        }
        Ok(2 * x)
    }
);

crate::task!(
    /// Sleeps 10 ms per item: a long job, for cancellation.
    pub(crate) Slow = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        x
    }
);

/// Numbers of `init` calls in this process, part of every state's token.
static INITS: AtomicU64 = AtomicU64::new(0);

/// A per-worker token and a per-state item counter: proves `init` ran once per worker.
pub(crate) struct InitToken;

/// The state [`InitToken::init`] builds: a token unique to this `init` call, and a counter.
pub(crate) struct TokenState {
    token: String,
    offset: u64,
    count: u64,
}

impl Task for InitToken {
    type Item = u64;
    /// `(token, count, x + offset)`: the state's token, how many items this state has run
    /// (this one included), and the item plus the init argument.
    type Output = (String, u64, u64);
    type Args = ();
    /// Added to every item, through the state.
    type Init = u64;
    type State = TokenState;

    fn init(offset: &u64, _: &()) -> Result<TokenState, BoxError> {
        let nonce = INITS.fetch_add(1, Ordering::SeqCst);
        let token = format!(
            "pid {} thread {:?} init #{nonce} at {:?}",
            std::process::id(),
            std::thread::current().id(),
            std::time::SystemTime::now()
        );
        Ok(TokenState { token, offset: *offset, count: 0 })
    }

    fn run(x: u64, _: &(), state: &mut TokenState) -> Result<(String, u64, u64), BoxError> {
        // Long enough that every worker of the job gets items.
        std::thread::sleep(Duration::from_millis(2));
        state.count += 1;
        Ok((state.token.clone(), state.count, x + state.offset))
    }
}
crate::register_task!(InitToken);

/// Fails the first attempt at every item it has not seen on this worker: with `Err` when
/// its args are `false`, with a panic when `true`; succeeds (`x + 1`) on a second attempt,
/// which a retry runs on the same worker, with the same state.
pub(crate) struct FailsFirst;

impl Task for FailsFirst {
    type Item = u64;
    type Output = u64;
    /// Panic (`true`) or return `Err` (`false`) on a first attempt.
    type Args = bool;
    type Init = ();
    /// The items this worker has seen.
    type State = std::collections::HashSet<u64>;

    fn init(_: &(), _: &bool) -> Result<Self::State, BoxError> {
        Ok(Default::default())
    }

    fn run(x: u64, panics: &bool, seen: &mut Self::State) -> Result<u64, BoxError> {
        if seen.insert(x) {
            if *panics {
                panic!("conformance kit: item {x} panics on its first attempt");
            }
            return Err(format!("conformance kit: item {x} fails on its first attempt").into());
        }
        Ok(x + 1)
    }
}
crate::register_task!(FailsFirst);

/// The error [`PickyRetry`] declines to retry.
#[derive(Debug)]
pub(crate) struct Fatal(pub u32);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conformance kit: a fatal failure at attempt {}", self.0)
    }
}

impl std::error::Error for Fatal {}

/// Item `args` always fails with [`Fatal`], which its [`retry_if`](Task::retry_if) declines
/// (the message names the attempt, counted by the worker's state: a retry would say 2); the
/// others fail their first attempt with a transient error and give `x + 1` on the second.
pub(crate) struct PickyRetry;

impl Task for PickyRetry {
    type Item = u64;
    type Output = u64;
    /// The item that fails fatally.
    type Args = u64;
    type Init = ();
    /// Attempts per item on this worker.
    type State = std::collections::HashMap<u64, u32>;

    fn init(_: &(), _: &u64) -> Result<Self::State, BoxError> {
        Ok(Default::default())
    }

    fn run(x: u64, fatal: &u64, attempts: &mut Self::State) -> Result<u64, BoxError> {
        let attempt = attempts.entry(x).or_default();
        *attempt += 1;
        if x == *fatal {
            return Err(Box::new(Fatal(*attempt)));
        }
        if *attempt == 1 {
            return Err(format!("conformance kit: item {x} fails transiently").into());
        }
        Ok(x + 1)
    }

    fn retry_if(failure: &crate::FailedAttempt<'_>) -> bool {
        !failure.error.is_some_and(|e| e.is::<Fatal>())
    }
}
crate::register_task!(PickyRetry);

/// Args of [`WithArgs`]: a plain value, a string and a shared table.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct KitArgs {
    /// Multiplies the table's value.
    pub factor: u64,
    /// Echoed in every output.
    pub label: String,
    /// Looked up by item.
    pub table: Shared<Vec<u64>>,
}

crate::try_task!(
    /// `(table[x % len] * factor + x, "label#x")`.
    pub(crate) WithArgs = |x: u64, args: &KitArgs| -> (u64, String) {
        let len = args.table.len() as u64;
        if len == 0 {
            return Err("conformance kit: empty shared table".into());
        }
        let v = args.table[(x % len) as usize];
        Ok((v.wrapping_mul(args.factor).wrapping_add(x), format!("{}#{x}", args.label)))
    }
);

/// A large item: a seed and a few MiB of numbers.
pub(crate) type BigItem = (u64, Vec<u64>);

crate::task!(
    /// Returns one and a half times the item's data: `out[j] = data[j % len] ^ seed`, longer
    /// than the input by half.
    pub(crate) Big = |item: BigItem| -> Vec<u64> {
        let (seed, data) = item;
        let n = data.len() + data.len() / 2;
        (0..n).map(|j| data.get(j % data.len().max(1)).copied().unwrap_or(0) ^ seed).collect()
    }
);

/// `some_other_stuff` of the complete example: in the args plainly, or shared.
#[derive(Serialize, Deserialize)]
pub(crate) enum Stuff {
    /// Passed with the args.
    Plain(Series),
    /// In a [`Shared`].
    Shared(Shared<Series>),
}

impl Stuff {
    fn series(&self) -> &Series {
        match self {
            Stuff::Plain(s) => s,
            Stuff::Shared(s) => s,
        }
    }
}

/// The complete example's keyword arguments of `method`.
#[derive(Serialize, Deserialize)]
pub(crate) struct MethodArgs {
    /// The series multiplied column-wise.
    pub some_other_stuff: Stuff,
    /// Added to every value.
    pub some_float: f64,
}

/// The complete example's `method`: `frame * series` column-wise, plus the float and the
/// per-worker attribute set by `init`; returns that frame and three times it.
pub(crate) struct Method;

impl Task for Method {
    type Item = Frame;
    type Output = [Frame; 2];
    type Args = MethodArgs;
    type Init = i64;
    type State = i64;

    fn init(a: &i64, _args: &MethodArgs) -> Result<i64, BoxError> {
        Ok(*a)
    }

    fn run(element: Frame, args: &MethodArgs, some_attr: &mut i64) -> Result<[Frame; 2], BoxError> {
        let s = args.some_other_stuff.series().as_any().downcast_ref::<Int64Array>().ok_or("series must be Int64")?;
        if s.len() != element.num_columns() {
            return Err(format!("series has {} values for {} columns", s.len(), element.num_columns()).into());
        }
        let shift = args.some_float + *some_attr as f64;
        let mut first = Vec::with_capacity(element.num_columns());
        let mut third = Vec::with_capacity(element.num_columns());
        for (j, col) in element.columns().iter().enumerate() {
            let col = col.as_any().downcast_ref::<Int64Array>().ok_or("frame columns must be Int64")?;
            let v: Float64Array = col.iter().map(|x| x.map(|x| (x * s.value(j)) as f64 + shift)).collect();
            let t: Float64Array = v.iter().map(|x| x.map(|x| 3.0 * x)).collect();
            first.push((element.schema().field(j).name().clone(), Arc::new(v) as ArrayRef));
            third.push((element.schema().field(j).name().clone(), Arc::new(t) as ArrayRef));
        }
        Ok([Frame(RecordBatch::try_from_iter(first)?), Frame(RecordBatch::try_from_iter(third)?)])
    }
}
crate::register_task!(Method);

/// An input frame of the complete example, columns `"0"` and `"1"`.
pub(crate) fn frame(rows: [[i64; 2]; 2]) -> Result<Frame, BoxError> {
    let c0: ArrayRef = Arc::new(Int64Array::from(vec![rows[0][0], rows[1][0]]));
    let c1: ArrayRef = Arc::new(Int64Array::from(vec![rows[0][1], rows[1][1]]));
    Ok(Frame(RecordBatch::try_from_iter([("0", c0), ("1", c1)])?))
}

/// The values of an output frame, checked to have the complete example's columns.
pub(crate) fn table_of(f: &Frame) -> Result<super::Table, String> {
    let schema = f.schema();
    let names: Vec<&str> = schema.fields().iter().map(|c| c.name().as_str()).collect();
    if names != super::COLUMNS {
        return Err(format!("columns {names:?}, expected {:?}", super::COLUMNS));
    }
    if f.num_rows() != 2 {
        return Err(format!("{} rows, expected 2", f.num_rows()));
    }
    let mut t = [[0.0; 2]; 2];
    for (c, col) in f.columns().iter().enumerate() {
        let col = col
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| format!("column {c} is {}, expected Float64", col.data_type()))?;
        for (r, row) in t.iter_mut().enumerate() {
            row[c] = if col.is_null(r) { f64::NAN } else { col.value(r) };
        }
    }
    Ok(t)
}

/// `3x + 1`, and a line `x` appended to the file its args name for every run: the side
/// channel by which the journal check counts executions (workers share the driver's
/// filesystem on every backend of this repository).
pub(crate) struct Logged;

impl Task for Logged {
    type Item = u64;
    type Output = u64;
    /// The executions log.
    type Args = String;
    type Init = ();
    type State = ();

    fn init(_: &(), _: &String) -> Result<(), BoxError> {
        Ok(())
    }

    fn run(x: u64, log: &String, _: &mut ()) -> Result<u64, BoxError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
        // One write of a few bytes to a file opened for appending: lines never interleave.
        f.write_all(format!("{x}\n").as_bytes())?;
        Ok(3 * x + 1)
    }
}
crate::register_task!(Logged);
