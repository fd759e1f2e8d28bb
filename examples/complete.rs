//! The Python original's complete example, same argv:
//!
//! ```text
//! cargo run --release --example complete -- KIND GATHER BATCHED SHARE [GENERATOR] [MAX_WORKERS]
//! cargo run --release --example complete -- threads True 16 True
//! ```
//!
//! KIND: serial, threads (multithread), process (multiproc), mpi, k8s. GATHER, SHARE,
//! GENERATOR: True or False. BATCHED: True, False, a number of batches, or auto.
//! MAX_WORKERS: a number, or `default`.
//!
//! `method` multiplies each frame by a series (column-wise, as pandas aligns a Series with the
//! columns), adds a float and a per-worker attribute set by `init` (the Python original's
//! `method_in_processes`), and returns that frame and three times it.

use adparallelengine::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use adparallelengine::arrow::{Frame, Series};
use adparallelengine::{register_task, BoxError, Engine, Kind, Shared, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `some_other_stuff`: passed with the args, or shared (the Python original's `share=`).
#[derive(Serialize, Deserialize)]
enum Stuff {
    Plain(Series),
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

/// The Python original's keyword arguments of `method`.
#[derive(Serialize, Deserialize)]
struct MethodArgs {
    some_other_stuff: Stuff,
    some_float: f64,
}

/// The Python original's `method`.
struct Method;

impl Task for Method {
    type Item = Frame;
    type Output = [Frame; 2];
    type Args = MethodArgs;
    /// The Python original's `init_method` kwargs: `{"a": 1}`.
    type Init = i64;
    /// The Python original's `Dummy.some_attr`, per worker.
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
register_task!(Method);

fn frame(rows: [[i64; 2]; 2]) -> Frame {
    let c0: ArrayRef = Arc::new(Int64Array::from(vec![rows[0][0], rows[1][0]]));
    let c1: ArrayRef = Arc::new(Int64Array::from(vec![rows[0][1], rows[1][1]]));
    Frame(RecordBatch::try_from_iter([("0", c0), ("1", c1)]).expect("two equal columns"))
}

fn flag(args: &[String], i: usize, name: &str, default: bool) -> Result<bool, String> {
    match args.get(i).map(String::as_str) {
        None => Ok(default),
        Some("True") | Some("true") => Ok(true),
        Some("False") | Some("false") => Ok(false),
        Some(other) => Err(format!("{name} must be True or False, got {other:?}")),
    }
}

fn main() {
    // Errors are printed with their message (not their Debug form) and exit with status 1.
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 4 {
        return Err("usage: complete KIND GATHER BATCHED SHARE [GENERATOR] [MAX_WORKERS]".into());
    }
    let kind: Kind = argv[0].parse()?;
    let gather = flag(&argv, 1, "GATHER", false)?;
    let batched: adparallelengine::Batching = argv[2].parse()?;
    let share = flag(&argv, 3, "SHARE", false)?;
    let generator = flag(&argv, 4, "GENERATOR", false)?;
    let max_workers = match argv.get(5).map(String::as_str) {
        None | Some("default") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| format!("MAX_WORKERS must be a number or default, got {n:?}"))?),
    };

    let rows = [
        [[0, 1], [2, 3]],
        [[4, 5], [6, 7]],
        [[8, 9], [10, 11]],
        [[12, 13], [14, 15]],
        [[16, 17], [18, 19]],
        [[21, 22], [23, 24]],
    ];
    let s = Series(Arc::new(Int64Array::from(vec![2, 3])));
    let f = 5.0;
    let some_other_stuff = if share { Stuff::Shared(Shared::new(s)) } else { Stuff::Plain(s) };

    let engine = Engine::builder(kind).max_workers_opt(max_workers).path_shared("tests/data/shared").build()?;

    // A generator is consumed lazily, exactly once; a Vec is just as fine.
    let items: Box<dyn Iterator<Item = Frame>> = if generator {
        let mut k = 0;
        Box::new(std::iter::from_fn(move || {
            let r = rows.get(k).copied()?;
            k += 1;
            Some(frame(r))
        }))
    } else {
        Box::new(rows.iter().copied().map(frame).collect::<Vec<_>>().into_iter())
    };
    let job = engine
        .map(Method, items)
        .length(rows.len())
        .args(MethodArgs { some_other_stuff, some_float: f })
        .init(1)
        .batched(batched);

    if gather {
        let res = job.gather()?;
        for (k, fr) in res.iter().enumerate() {
            println!("frame {k}:\n{}", fr.pretty());
        }
    } else {
        let res = job.run()?;
        for (i, [a, b]) in res.iter().enumerate() {
            println!("item {i} (0):\n{}", a.pretty());
            println!("item {i} (1):\n{}", b.pretty());
        }
    }
    let stats = engine.last_stats().unwrap_or_default();
    println!(
        "done: kind={} backend={} workers={} items={} batches={}",
        kind,
        engine.backend_name(),
        stats.workers,
        stats.items_done,
        stats.batches.len()
    );
    Ok(())
}
