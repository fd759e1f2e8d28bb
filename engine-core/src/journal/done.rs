//! [`Done`]: the items a journal already holds, and the numbering of the items still to run.
//!
//! A resumed job sends only the items the journal lacks: the backend numbers them from 0
//! ("fresh" indices). A fresh index `j` is the input's `j + d`, where `d` counts the
//! journaled items before it: those of the records with at most `j` fresh items before them
//! (a number that only grows from one record to the next, so a binary search finds them).

use super::file::RecordAt;

/// One journal record and the journaled items before it.
#[derive(Debug, Clone, Copy)]
struct Rec {
    at: RecordAt,
    before: usize,
}

impl Rec {
    /// Fresh items before this record.
    fn gap(&self) -> usize {
        self.at.start - self.before
    }
}

/// The records of a journal, in input order, without overlaps.
#[derive(Debug, Default)]
pub(crate) struct Done {
    recs: Vec<Rec>,
    total: usize,
}

impl Done {
    /// The journal's records, in any order; an overlap is an error (a damaged journal: the
    /// engine never journals an item twice).
    pub(crate) fn new(mut records: Vec<RecordAt>) -> Result<Self, String> {
        records.sort_by_key(|r| r.start);
        let mut recs = Vec::with_capacity(records.len());
        let mut total = 0usize;
        let mut end = 0usize;
        for at in records {
            if at.start < end {
                return Err(format!("damaged: two records hold item {}", at.start));
            }
            end = at.start + at.count;
            recs.push(Rec { at, before: total });
            total += at.count;
        }
        Ok(Done { recs, total })
    }

    /// Items held.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// One past the last item held (0 for none).
    pub(crate) fn end(&self) -> usize {
        self.recs.last().map_or(0, |r| r.at.start + r.at.count)
    }

    /// The records in input order.
    pub(crate) fn records(&self) -> impl Iterator<Item = &RecordAt> + '_ {
        self.recs.iter().map(|r| &r.at)
    }

    /// The `k`th record in input order.
    pub(crate) fn record(&self, k: usize) -> Option<&RecordAt> {
        self.recs.get(k).map(|r| &r.at)
    }

    /// Number of records.
    pub(crate) fn count(&self) -> usize {
        self.recs.len()
    }

    /// The input index of fresh item `j`, and how many fresh items follow it before the next
    /// journaled one (`usize::MAX`: none follows).
    pub(crate) fn to_input(&self, j: usize) -> (usize, usize) {
        let k = self.recs.partition_point(|r| r.gap() <= j);
        let before = self.recs[..k].last().map_or(0, |r| r.before + r.at.count);
        let run = self.recs.get(k).map_or(usize::MAX, |r| r.gap() - j);
        (j + before, run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start: usize, count: usize) -> RecordAt {
        RecordAt { start, count, offset: 0, len: 0 }
    }

    #[test]
    fn fresh_indices_map_to_the_gaps_between_records() {
        // Journaled: 0..2, 5..6, 6..8; fresh: 2, 3, 4, 8, 9, ...
        let done = Done::new(vec![rec(6, 2), rec(0, 2), rec(5, 1)]).unwrap();
        assert_eq!(done.len(), 5);
        assert_eq!(done.end(), 8);
        let inputs: Vec<usize> = (0..5).map(|j| done.to_input(j).0).collect();
        assert_eq!(inputs, vec![2, 3, 4, 8, 9]);
        assert_eq!(done.to_input(0).1, 3, "2, 3, 4 before the record at 5");
        assert_eq!(done.to_input(2).1, 1);
        assert_eq!(done.to_input(3).1, usize::MAX);
        // Brute force over random layouts.
        for seed in 0..50u64 {
            let mut held = [false; 60];
            let mut recs = Vec::new();
            let mut i = (seed % 3) as usize;
            while i < 60 {
                let n = 1 + ((seed * 7 + i as u64) % 4) as usize;
                let n = n.min(60 - i);
                recs.push(rec(i, n));
                held[i..i + n].iter_mut().for_each(|h| *h = true);
                i += n + ((seed + i as u64) % 3) as usize;
            }
            let done = Done::new(recs).unwrap();
            let fresh: Vec<usize> = (0..60).filter(|&x| !held[x]).collect();
            for (j, &x) in fresh.iter().enumerate() {
                let (input, run) = done.to_input(j);
                assert_eq!(input, x, "seed {seed}, fresh {j}");
                let next_held = (x..60).find(|&y| held[y]);
                if let Some(y) = next_held {
                    assert_eq!(run, y - x, "seed {seed}, fresh {j}");
                }
            }
        }
    }

    #[test]
    fn overlapping_records_are_refused() {
        assert!(Done::new(vec![rec(0, 3), rec(2, 1)]).is_err());
    }
}
