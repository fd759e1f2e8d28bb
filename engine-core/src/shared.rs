//! [`Shared<T>`]: a large value given to every worker without a copy per worker.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A large read-only value shared with every worker (the seed's `share=`).
///
/// On the serial and threads backends every worker borrows the caller's value through an
/// `Arc`: nothing is copied, whatever its size. Out-of-process backends put it once into the
/// engine's [`SharedStore`](crate::SharedStore) under `path_shared` and give workers a handle
/// they map read-only.
///
/// Put it in your task's `Args`; it dereferences to `T`.
///
/// ```
/// use engine_core::Shared;
/// let big = Shared::new(vec![1.0_f64; 1_000]);
/// let copy = big.clone(); // cheap: same allocation
/// assert!(std::ptr::eq(big.as_ptr(), copy.as_ptr()));
/// assert_eq!(big.len(), 1_000);
/// ```
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Wraps a value to share.
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }

    /// Shares a value that is already in an `Arc`, without copying it.
    pub fn from_arc(value: Arc<T>) -> Self {
        Shared(value)
    }

    /// The `Arc` behind the handle.
    pub fn arc(&self) -> &Arc<T> {
        &self.0
    }

    /// Whether two handles point at the same value (no copy was made between them).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for Shared<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&*self.0).finish()
    }
}

/// Serialized inline, as the value itself. In-process backends never serialize it; the
/// out-of-process backends encode it as a store handle instead.
impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}
