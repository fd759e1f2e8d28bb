//! The share context: the store that [`Shared`](crate::Shared) values — and the Arrow data in
//! them — go to while a driver encodes a job's args for out-of-process workers, and come from
//! while a worker decodes them. Outside a context (in-process backends, items, results) they
//! are encoded inline.

use crate::store::SharedStore;
use std::cell::RefCell;
use std::sync::Arc;

#[derive(Clone)]
#[cfg_attr(not(feature = "arrow"), allow(dead_code))]
struct Ctx {
    store: Arc<dyn SharedStore>,
    inside_shared: bool,
}

thread_local! {
    static CTX: RefCell<Vec<Ctx>> = const { RefCell::new(Vec::new()) };
}

struct Pop;
impl Drop for Pop {
    fn drop(&mut self) {
        CTX.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

fn push(ctx: Ctx) -> Pop {
    CTX.with(|c| c.borrow_mut().push(ctx));
    Pop
}

/// Runs `f` (encoding or decoding a job's args) with `store` as the share context.
pub fn with_store<R>(store: Arc<dyn SharedStore>, f: impl FnOnce() -> R) -> R {
    let _pop = push(Ctx { store, inside_shared: false });
    f()
}

/// The store of the current context.
pub(crate) fn current() -> Option<Arc<dyn SharedStore>> {
    CTX.with(|c| c.borrow().last().map(|x| Arc::clone(&x.store)))
}

/// Whether a `Shared` value is being encoded or decoded right now (Arrow data then goes to
/// the store as its own aligned IPC file, mapped zero-copy by workers).
#[cfg_attr(not(feature = "arrow"), allow(dead_code))]
pub(crate) fn inside_shared() -> bool {
    CTX.with(|c| c.borrow().last().is_some_and(|x| x.inside_shared))
}

/// Runs `f` as the inside of a `Shared` value.
pub(crate) fn enter_shared<R>(store: Arc<dyn SharedStore>, f: impl FnOnce() -> R) -> R {
    let _pop = push(Ctx { store, inside_shared: true });
    f()
}
