//! The serial backend: every item runs in the calling thread, lazily, one batch at a time.
//! It is the reference semantics the other backends are tested against, and what
//! `max_workers = 1` selects, as in the Python original.
//!
//! ```
//! use adparallelengine_core::Engine;
//! use adparallelengine_serial::SerialBackend;
//! adparallelengine_core::task!(Inc = |x: i32| -> i32 { x + 1 });
//! let engine = Engine::from_backend(SerialBackend);
//! assert_eq!(engine.map(Inc, vec![1, 2, 3]).run()?, vec![2, 3, 4]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

use adparallelengine_core::plumbing::{Backend, Completions, Plan};
use adparallelengine_core::{Result, Task};

/// Runs every item in the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialBackend;

impl Backend for SerialBackend {
    fn name(&self) -> &'static str {
        "serial"
    }

    fn max_workers(&self) -> usize {
        1
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        adparallelengine_core::plumbing::run_inline(plan)
    }
}
