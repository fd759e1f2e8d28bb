//! The [`Task`] trait: the function an engine maps over items.

use crate::error::BoxError;
use serde::{de::DeserializeOwned, Serialize};

/// A value that can travel to a worker: owned, sendable, and serde-serializable.
///
/// Serial and threads run tasks directly without serializing; worker processes, MPI ranks and
/// pods need the serde bound, so every task satisfies it from the start and one program runs
/// unchanged on every backend.
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {}

/// A named function mapped over items.
///
/// Closures cannot travel to another process, so a task is a type with a name, registered at
/// link time with [`register_task!`](crate::register_task). Any process running the same
/// binary (a re-executed child, another MPI rank, a pod of the same image) finds it by name.
///
/// - `Args` is given to every call (the Python original's keyword arguments); a worker receives it once.
///   Put large values in a [`Shared`](crate::Shared).
/// - `Init` is the argument of [`Task::init`], which runs once per worker before its first
///   item and returns the worker's `State` (the Python original's `init_method`).
///
/// Use `()` for what you do not need. For a task without args, init or errors the
/// [`task!`](crate::task) macro writes all of this in one line.
///
/// ```
/// use adparallelengine_core::{register_task, BoxError, Task};
///
/// /// Multiplies each item by `args` and adds the worker's offset.
/// struct Scale;
/// impl Task for Scale {
///     type Item = f64;
///     type Output = f64;
///     type Args = f64;
///     type Init = f64;
///     type State = f64;
///     fn init(offset: &f64, _args: &f64) -> Result<f64, BoxError> {
///         Ok(*offset)
///     }
///     fn run(x: f64, factor: &f64, offset: &mut f64) -> Result<f64, BoxError> {
///         if x.is_nan() {
///             return Err("NaN item".into());
///         }
///         Ok(x * factor + *offset)
///     }
/// }
/// register_task!(Scale);
/// ```
pub trait Task: 'static {
    /// One input item.
    type Item: Payload;
    /// What one call returns.
    type Output: Payload;
    /// Extra arguments given to every call; sent to each worker once.
    type Args: Payload + Sync;
    /// Argument of [`Task::init`].
    type Init: Payload + Sync;
    /// Per-worker state built by [`Task::init`] and lent to every call on that worker.
    type State: 'static;

    /// The name under which workers find this task. Defaults to the type's path, which is the
    /// same in every process running the same build.
    fn name() -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Runs once per worker, before its first item.
    fn init(init: &Self::Init, args: &Self::Args) -> Result<Self::State, BoxError>;

    /// Runs on one item. An `Err` or a panic fails that item (and names its index).
    fn run(item: Self::Item, args: &Self::Args, state: &mut Self::State) -> Result<Self::Output, BoxError>;

    /// Whether a failed attempt at an item is worth another, in a job with
    /// [`retry_errors`](crate::Job::retry_errors) (never called without). The default retries
    /// every `Err` and panic; override it to retry only what is transient (a timeout, a busy
    /// service) and let the rest fail at once.
    ///
    /// It is a function of the task, not a closure given to the job, for the reason the task
    /// is: it runs on the worker where the attempt failed (another process, rank or pod),
    /// where only the task's code exists. A panic in it counts as `false`.
    ///
    /// ```
    /// use adparallelengine_core::{register_task, BoxError, FailedAttempt, Task};
    ///
    /// /// Reads a file; only timeouts are worth another attempt.
    /// struct Fetch;
    /// impl Task for Fetch {
    ///     type Item = String;
    ///     type Output = u64;
    ///     type Args = ();
    ///     type Init = ();
    ///     type State = ();
    ///     fn init(_: &(), _: &()) -> Result<(), BoxError> { Ok(()) }
    ///     fn run(path: String, _: &(), _: &mut ()) -> Result<u64, BoxError> {
    ///         Ok(std::fs::metadata(path)?.len())
    ///     }
    ///     fn retry_if(failure: &FailedAttempt<'_>) -> bool {
    ///         let io = failure.error.and_then(|e| e.downcast_ref::<std::io::Error>());
    ///         io.is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    ///     }
    /// }
    /// register_task!(Fetch);
    /// ```
    fn retry_if(failure: &crate::FailedAttempt<'_>) -> bool {
        let _ = failure;
        true
    }
}

/// Defines and registers a task from a closure-like body, for tasks with no init and no errors.
/// A body that can fail is [`try_task!`](crate::try_task).
///
/// **A task cannot capture local variables.** The body becomes a function, because a task
/// runs in other processes (worker processes, MPI ranks, pods) where the caller's locals do
/// not exist; rustc then reports `error[E0434]: can't capture dynamic environment in a fn
/// item` and suggests "the `|| { ... }` closure form", which does not apply here. Pass what the
/// body needs as the job's args instead: a second parameter `args: &T` and `.args(value)` on
/// the job (sent once per worker), or a [`Shared`](crate::Shared) value for large data.
///
/// ```
/// adparallelengine_core::task!(
///     /// Doubles a number.
///     pub Double = |x: u64| -> u64 { x * 2 }
/// );
/// adparallelengine_core::task!(pub AddArg = |x: u64, args: &u64| -> u64 { x + *args });
/// # use adparallelengine_core::Task;
/// # let mut s = ();
/// assert_eq!(Double::run(21, &(), &mut s).unwrap(), 42);
/// assert_eq!(AddArg::run(1, &2, &mut s).unwrap(), 3);
/// ```
#[macro_export]
macro_rules! task {
    ($(#[$meta:meta])* $vis:vis $name:ident = |$item:ident : $ity:ty| -> $oty:ty $body:block) => {
        $crate::__define_task!($(#[$meta])* $vis $name, $item: $ity, _args: (), $oty, { Ok($body) });
    };
    ($(#[$meta:meta])* $vis:vis $name:ident = |$item:ident : $ity:ty, $args:ident : &$aty:ty| -> $oty:ty $body:block) => {
        $crate::__define_task!($(#[$meta])* $vis $name, $item: $ity, $args: $aty, $oty, { Ok($body) });
    };
}

/// Defines and registers a task whose body can fail: it returns `Result<Output, BoxError>`,
/// so `?` works on any error type (`std::io::Error`, a `String`, your own), and an `Err`
/// fails that item with its index and message, as a panic does. No init, like
/// [`task!`](crate::task); for per-worker state implement [`Task`] by hand.
///
/// ```
/// use adparallelengine_core::Task;
/// adparallelengine_core::try_task!(
///     /// Parses a number; a bad one fails its item.
///     pub Parse = |s: String| -> u64 { Ok(s.trim().parse::<u64>()?) }
/// );
/// adparallelengine_core::try_task!(pub Below = |x: u64, limit: &u64| -> u64 {
///     if x >= *limit {
///         return Err(format!("{x} is not below {limit}").into());
///     }
///     Ok(x)
/// });
/// assert_eq!(Parse::run(" 42".into(), &(), &mut ()).unwrap(), 42);
/// assert!(Parse::run("x".into(), &(), &mut ()).unwrap_err().to_string().contains("invalid digit"));
/// assert_eq!(Below::run(3, &5, &mut ()).unwrap(), 3);
/// assert_eq!(Below::run(5, &5, &mut ()).unwrap_err().to_string(), "5 is not below 5");
/// ```
#[macro_export]
macro_rules! try_task {
    ($(#[$meta:meta])* $vis:vis $name:ident = |$item:ident : $ity:ty| -> $oty:ty $body:block) => {
        $crate::__define_task!($(#[$meta])* $vis $name, $item: $ity, _args: (), $oty, $body);
    };
    ($(#[$meta:meta])* $vis:vis $name:ident = |$item:ident : $ity:ty, $args:ident : &$aty:ty| -> $oty:ty $body:block) => {
        $crate::__define_task!($(#[$meta])* $vis $name, $item: $ity, $args: $aty, $oty, $body);
    };
}

/// What [`task!`](crate::task) and [`try_task!`](crate::try_task) expand to: the type, its
/// [`Task`] impl (no init, no state) with `run` returning `$run`, and its registration.
#[doc(hidden)]
#[macro_export]
macro_rules! __define_task {
    ($(#[$meta:meta])* $vis:vis $name:ident, $item:ident : $ity:ty, $args:ident : $aty:ty, $oty:ty, $run:block) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $name;
        impl $crate::Task for $name {
            type Item = $ity;
            type Output = $oty;
            type Args = $aty;
            type Init = ();
            type State = ();
            fn init(_: &(), _: &$aty) -> ::std::result::Result<(), $crate::BoxError> {
                Ok(())
            }
            #[allow(unused_variables)]
            fn run($item: $ity, $args: &$aty, _: &mut ()) -> ::std::result::Result<$oty, $crate::BoxError> $run
        }
        $crate::register_task!($name);
    };
}
