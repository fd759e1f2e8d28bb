//! Link-time registry of tasks, so any process running the same binary finds a task by name.
//!
//! Entries live in a `linkme` distributed slice: the linker gathers them, so the registry is
//! complete before any code runs, including the pre-`main` hook through which a re-executed
//! worker process serves without ever entering the user's `main`.

use crate::error::{Error, Result};
use crate::remote::protocol::JobSpec;
use crate::remote::transport::Transport;
use crate::store::SharedStore;
use crate::task::Task;
use std::any::TypeId;
use std::sync::Arc;

/// Runs one job of a registered task on a worker (stored in the registry for each task).
pub type ServeJob =
    fn(&mut dyn Transport, usize, JobSpec, Option<Arc<dyn SharedStore>>) -> std::result::Result<(), String>;

/// One registered task. Built by [`register_task!`](crate::register_task); not for direct use.
#[doc(hidden)]
pub struct TaskEntry {
    /// The task's name ([`Task::name`]).
    pub name: fn() -> &'static str,
    /// The task type's identity, to tell two types registered under one name apart.
    pub type_id: fn() -> TypeId,
    /// Runs one job of this task in a worker process (decodes args, init, batches).
    pub serve: ServeJob,
}

/// Every registered task of this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// Registers a task so that workers find it by name. Put it next to the `impl Task`.
///
/// ```
/// struct Noop;
/// impl adparallelengine_core::Task for Noop {
///     type Item = ();
///     type Output = ();
///     type Args = ();
///     type Init = ();
///     type State = ();
///     fn init(_: &(), _: &()) -> Result<(), adparallelengine_core::BoxError> { Ok(()) }
///     fn run(_: (), _: &(), _: &mut ()) -> Result<(), adparallelengine_core::BoxError> { Ok(()) }
/// }
/// adparallelengine_core::register_task!(Noop);
/// assert!(adparallelengine_core::is_registered::<Noop>());
/// ```
#[macro_export]
macro_rules! register_task {
    ($task:ty) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::TaskEntry = $crate::__private::TaskEntry {
                name: <$task as $crate::Task>::name,
                type_id: ::std::any::TypeId::of::<$task>,
                serve: $crate::__private::serve_job::<$task>,
            };
        };
    };
}

/// Names of every task registered in this binary.
pub fn registered_names() -> Vec<&'static str> {
    TASKS.iter().map(|e| (e.name)()).collect()
}

/// The entry registered under `name`.
pub fn lookup(name: &str) -> Result<&'static TaskEntry> {
    let mut found = TASKS.iter().filter(|e| (e.name)() == name);
    let first = found.next().ok_or_else(|| Error::TaskNotRegistered(name.to_string()))?;
    if found.any(|e| (e.type_id)() != (first.type_id)()) {
        return Err(Error::DuplicateTaskName(name.to_string()));
    }
    Ok(first)
}

/// Whether `T` is registered (under its name, by its own type).
pub fn is_registered<T: Task>() -> bool {
    check::<T>().is_ok()
}

/// Checks that `T` is registered exactly once under its name; the engine calls this at the
/// start of every job, on every backend, so a forgotten registration fails on serial already
/// rather than later on a cluster.
pub fn check<T: Task>() -> Result<()> {
    let entry = lookup(T::name())?;
    if (entry.type_id)() != TypeId::of::<T>() {
        return Err(Error::DuplicateTaskName(T::name().to_string()));
    }
    Ok(())
}
