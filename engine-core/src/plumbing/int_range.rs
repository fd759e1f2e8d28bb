//! A batch of a range of integers travels as its first item and its length.
//!
//! `map(task, 0..n)` is the commonest job there is (seeds, indices, ids). Cut into batches
//! like any iterator, a range's items were written into memory by the driver, read back by
//! the worker, and (over a network) sent one by one: for a million `u64`s, 8 MB written and
//! read for nothing, a tenth of what a worker-process job cost the machine. The items of a
//! range are `first, first + 1, …`: the driver cuts a batch by moving the range forward
//! (O(1), [`advance`]) and sends `first` and the count; the worker makes the items as it runs
//! them ([`RangeItems`]).
//!
//! Stable Rust has no specialization, so ranges are recognized at run time by their type
//! ([`is_int_range`]), as `map`'s split by index does (see `plumbing::indexed`).

use crate::plumbing::plain::PlainItems;
use std::any::TypeId;
use std::ops::{Range, RangeInclusive};

/// Whether `I` is a `Range` or `RangeInclusive` of a primitive integer: its items are then
/// consecutive integers, each one more than the one before.
pub(crate) fn is_int_range<I>() -> bool {
    // `typeid::of` takes types that borrow (the user's iterator may); a range borrows nothing,
    // so an equal identity is the very type.
    let id = typeid::of::<I>();
    macro_rules! any_of {
        ($($t:ty),*) => { false $(|| id == TypeId::of::<Range<$t>>() || id == TypeId::of::<RangeInclusive<$t>>())* };
    }
    any_of!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize)
}

/// Moves `iter` past its next `k` items (fewer at its end): how many it passed. O(1) on the
/// ranges [`is_int_range`] accepts, whose size hint is exact (or saturated at `usize::MAX`,
/// for a `u128` range longer than that: it then holds `k` items at least).
pub(crate) fn advance<I: Iterator>(iter: &mut I, k: usize) -> usize {
    let k = k.min(iter.size_hint().0);
    if k > 0 {
        let _ = iter.nth(k - 1);
    }
    k
}

/// `x + i` for an integer `X` when it is one (`None` for any other type, or when the sum
/// does not fit in `X`).
pub(crate) fn offset<X: 'static>(x: &X, i: usize) -> Option<X> {
    macro_rules! ints {
        ($($t:ty),*) => { $(
            if TypeId::of::<X>() == TypeId::of::<$t>() {
                // SAFETY: `X` is `$t` (same `TypeId`, both `'static`): reading its bits as a
                // `$t` and a `$t`'s bits as an `X` are reads of the same type.
                let v: $t = unsafe { std::mem::transmute_copy(x) };
                let sum: $t = <$t>::try_from(i).ok().and_then(|i| v.checked_add(i))?;
                // SAFETY: as above.
                return Some(unsafe { std::mem::transmute_copy(&sum) });
            }
        )* };
    }
    // Unsigned: `i` as the type itself. Signed: through `i128` (every one of them but `i128`
    // fits; for `i128`, `i` does).
    ints!(u8, u16, u32, u64, u128, usize);
    macro_rules! signed {
        ($($t:ty),*) => { $(
            if TypeId::of::<X>() == TypeId::of::<$t>() {
                // SAFETY: as above.
                let v: $t = unsafe { std::mem::transmute_copy(x) };
                let sum = (v as i128).checked_add(i128::try_from(i).ok()?)?;
                let sum: $t = <$t>::try_from(sum).ok()?;
                // SAFETY: as above.
                return Some(unsafe { std::mem::transmute_copy(&sum) });
            }
        )* };
    }
    signed!(i8, i16, i32, i64, i128, isize);
    None
}

/// `x + i` without a check, for an integer `X` and an `i` that [`offset`] accepted (or a
/// smaller one).
#[inline(always)]
fn wrapping_offset<X: 'static>(x: &X, i: usize) -> X {
    macro_rules! ints {
        ($($t:ty),*) => { $(
            if TypeId::of::<X>() == TypeId::of::<$t>() {
                // SAFETY: `X` is `$t` (same `TypeId`, both `'static`).
                let v: $t = unsafe { std::mem::transmute_copy(x) };
                let sum = v.wrapping_add(i as $t);
                // SAFETY: as above.
                return unsafe { std::mem::transmute_copy(&sum) };
            }
        )* };
    }
    ints!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
    // Folded away for every integer; `RangeItems::new` (the only caller's maker) refuses
    // any other type, so no call gets here.
    unreachable!("a range's items are integers (checked by RangeItems::new)")
}

/// The `count` items `first, first + 1, …` of a batch of a range, made as they are read.
#[derive(Debug)]
pub(crate) struct RangeItems<X> {
    first: X,
    count: usize,
}

impl<X: 'static> RangeItems<X> {
    /// The batch of `count` items from the one whose bytes are `first` (as
    /// [`crate::plumbing::plain::as_bytes`] wrote it). An error message when `X` is not an
    /// integer, `first` is not one `X`, or the last item would not fit in `X`.
    pub(crate) fn from_bytes(first: &[u8], count: usize) -> Result<Self, String> {
        let x = match crate::plumbing::plain::read_in_place::<X>(first, 1) {
            Some(Ok(mut one)) => one.next(),
            Some(Err(e)) => return Err(format!("the first item of a range: {e}")),
            None => None,
        };
        let Some(x) = x else { return Err("a range's items must be integers".into()) };
        RangeItems::new(x, count)
    }

    /// The batch of `count` items from `first`; an error message when `X` is not an integer
    /// or the last item would not fit in `X`.
    pub(crate) fn new(first: X, count: usize) -> Result<Self, String> {
        if offset(&first, count.saturating_sub(1)).is_none() {
            return Err(format!("a range of {count} items from its first does not fit in its item type"));
        }
        Ok(RangeItems { first, count })
    }

    /// The items from the `k`-th on.
    fn from(&self, k: usize) -> Self {
        let k = k.min(self.count);
        RangeItems { first: wrapping_offset(&self.first, k), count: self.count - k }
    }

    /// The items, one by one.
    pub(crate) fn iter(self) -> impl ExactSizeIterator<Item = X> {
        let RangeItems { first, count } = self;
        (0..count).map(move |i| wrapping_offset(&first, i))
    }
}

impl<X: 'static> PlainItems<X> for RangeItems<X> {
    fn len(&self) -> usize {
        self.count
    }

    #[inline(always)]
    unsafe fn get(&self, i: usize) -> X {
        // `i < count`, and `new` checked that `first + (count - 1)` fits: no wrap.
        wrapping_offset(&self.first, i)
    }

    fn rest(&self, k: usize) -> impl ExactSizeIterator<Item = X> {
        self.from(k).iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::plain::as_bytes;

    #[test]
    fn ranges_of_integers_are_recognized_and_nothing_else() {
        assert!(is_int_range::<Range<u64>>() && is_int_range::<RangeInclusive<i8>>());
        assert!(is_int_range::<Range<u128>>() && is_int_range::<Range<isize>>());
        assert!(!is_int_range::<Range<char>>(), "chars skip the surrogates");
        assert!(!is_int_range::<std::vec::IntoIter<u64>>());
        assert!(!is_int_range::<std::iter::StepBy<Range<u64>>>(), "not consecutive");
        assert!(!is_int_range::<std::iter::Rev<Range<u64>>>(), "not ascending");
    }

    #[test]
    fn advance_moves_a_range_and_stops_at_its_end() {
        let mut r = 10u64..20;
        assert_eq!(advance(&mut r, 4), 4);
        assert_eq!(r.next(), Some(14));
        assert_eq!(advance(&mut r, 100), 5);
        assert_eq!(r.next(), None);
        let mut r = 0u8..=255;
        assert_eq!(advance(&mut r, 255), 255);
        assert_eq!(r.next(), Some(255));
        assert_eq!(r.next(), None);
        let mut r = 0u128..u128::MAX;
        assert_eq!(advance(&mut r, 7), 7);
        assert_eq!(r.next(), Some(7));
    }

    #[test]
    fn offsets_are_checked_at_the_ends_of_every_type() {
        assert_eq!(offset(&250u8, 5), Some(255));
        assert_eq!(offset(&250u8, 6), None);
        assert_eq!(offset(&-128i8, 255), Some(127));
        assert_eq!(offset(&-128i8, 256), None);
        assert_eq!(offset(&(i128::MAX - 3), 3), Some(i128::MAX));
        assert_eq!(offset(&(i128::MAX - 3), 4), None);
        assert_eq!(offset(&(u128::MAX - 1), 1), Some(u128::MAX));
        assert_eq!(offset(&-5isize, 5), Some(0));
        assert_eq!(offset(&1.0f64, 1), None, "not an integer");
    }

    #[test]
    fn a_batch_of_a_range_yields_its_items_and_refuses_what_does_not_fit() {
        let b = RangeItems::<i16>::from_bytes(as_bytes(&[-2i16]).unwrap(), 5).unwrap();
        assert_eq!(b.rest(0).collect::<Vec<_>>(), vec![-2, -1, 0, 1, 2]);
        assert_eq!(b.rest(3).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.rest(9).count(), 0);
        // SAFETY: 4 < 5 items.
        assert_eq!(unsafe { b.get(4) }, 2);
        assert!(RangeItems::<u8>::from_bytes(&[250], 7).is_err(), "past u8::MAX");
        assert_eq!(RangeItems::<u8>::from_bytes(&[250], 6).unwrap().iter().last(), Some(255));
        assert!(RangeItems::<u32>::from_bytes(&[1, 0], 1).is_err(), "two bytes are not a u32");
        assert!(RangeItems::<f32>::from_bytes(&[0; 4], 1).is_err(), "floats are not a range's");
        assert_eq!(RangeItems::<u64>::from_bytes(&[0; 8], 0).unwrap().iter().count(), 0);
    }
}
