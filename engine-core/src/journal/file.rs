//! The journal's file: a checked header, then checksummed records appended as batches come
//! back.
//!
//! ```text
//! header: "ADPEJNL\x02" | u32 identity length | u64 check | identity (postcard)
//! record: u32 payload length | u32 count | u64 start | u64 check | payload
//! ```
//!
//! Little-endian. A record's payload is the postcard encodings of `count` outputs, of the
//! items `start..start + count`. Its check is a hash of the other fields and the payload, so
//! a record cut short by a crash (or any damaged bytes) is found when the journal is opened:
//! it and what follows are cut off, never returned. Records are written with two `pwrite`s
//! each, at the end of what was checked, so a killed driver leaves at most one torn record.

use super::identity::Identity;
use super::{Journal, JournalSync};
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// Format 2: records of plain numbers hold the numbers' own bytes, checks are XXH3.
const MAGIC: &[u8; 8] = b"ADPEJNL\x02";
/// The magic of a journal in an earlier format (its version byte apart).
const MAGIC_FAMILY: &[u8; 7] = b"ADPEJNL";
const HEADER_FIXED: usize = 8 + 4 + 8;
const RECORD_HEADER: usize = 4 + 4 + 8 + 8;
/// Largest identity a header may declare (a damaged length must not allocate gigabytes).
const MAX_IDENTITY: usize = 1 << 20;

/// Where one record's payload is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordAt {
    /// Index of its first item in the input.
    pub(crate) start: usize,
    /// Number of outputs in it.
    pub(crate) count: usize,
    /// Offset of its payload in the file.
    pub(crate) offset: u64,
    /// Length of its payload.
    pub(crate) len: u32,
}

/// An open journal, locked for this job.
pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    end: u64,
    sync: JournalSync,
    last_sync: Instant,
    /// Items appended since the last sync (a record of none counts as one, so that any
    /// record makes the file need one).
    unsynced: u64,
}

fn err(path: &std::path::Path, what: impl std::fmt::Display) -> Error {
    Error::Journal { path: path.into(), message: what.to_string() }
}

/// The 64-bit check of `parts`.
fn check(parts: &[&[u8]]) -> u64 {
    crate::store::check64(parts)
}

impl JournalFile {
    /// Opens (or creates) the journal of the job `identity` and returns it with the records
    /// it holds. A torn or damaged tail is cut off. A journal of another job is an
    /// [`Error::JournalMismatch`], or emptied with [`Journal::discard_mismatched`]. A file
    /// that is not a journal is never overwritten.
    pub(crate) fn open(journal: &Journal, identity: &Identity) -> Result<(JournalFile, Vec<RecordAt>)> {
        let path = journal.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&path, format!("cannot open: {e}")))?;
        lock(&file).map_err(|e| err(&path, e))?;
        let mut jf = JournalFile { path, file, end: 0, sync: journal.sync, last_sync: Instant::now(), unsynced: 0 };
        let len = jf.file.metadata().map_err(|e| err(&jf.path, e))?.len();
        let held = if len == 0 { None } else { jf.read_header(len)? };
        let records = match held {
            // Empty, or a header torn while the journal was created: a new journal.
            None => {
                jf.start_over(identity)?;
                Vec::new()
            }
            Some((theirs, after)) => {
                let differences = theirs.differences(identity);
                if differences.is_empty() {
                    jf.end = after;
                    jf.scan(len)?
                } else if journal.discard_mismatched {
                    tracing::warn!(path = %jf.path.display(), ?differences, "journal of another job: emptied");
                    jf.start_over(identity)?;
                    Vec::new()
                } else {
                    return Err(Error::JournalMismatch { path: jf.path.as_path().into(), differences });
                }
            }
        };
        Ok((jf, records))
    }

    /// The header's identity and where the records begin; `None` for a torn header.
    fn read_header(&self, len: u64) -> Result<Option<(Identity, u64)>> {
        let mut fixed = [0u8; HEADER_FIXED];
        if len < HEADER_FIXED as u64 {
            let mut head = vec![0u8; len as usize];
            self.file.read_exact_at(&mut head, 0).map_err(|e| err(&self.path, e))?;
            return match MAGIC.starts_with(&head) {
                true => Ok(None),
                false => Err(self.not_a_journal()),
            };
        }
        self.file.read_exact_at(&mut fixed, 0).map_err(|e| err(&self.path, e))?;
        if &fixed[..8] != MAGIC {
            if &fixed[..7] == MAGIC_FAMILY {
                return Err(err(
                    &self.path,
                    format!(
                        "a journal in format {} written by another version of adparallelengine (this one reads format {}); \
                         it is left as it is: rerun with that version, or delete it to start over",
                        fixed[7], MAGIC[7]
                    ),
                ));
            }
            return Err(self.not_a_journal());
        }
        let n = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
        let sum = u64::from_le_bytes(fixed[12..20].try_into().unwrap_or([0; 8]));
        if n > MAX_IDENTITY {
            return Err(err(&self.path, format!("damaged header (an identity of {n} bytes)")));
        }
        if len < (HEADER_FIXED + n) as u64 {
            return Ok(None);
        }
        let mut bytes = vec![0u8; n];
        self.file.read_exact_at(&mut bytes, HEADER_FIXED as u64).map_err(|e| err(&self.path, e))?;
        if check(&[&bytes]) != sum {
            return Ok(None);
        }
        let identity = postcard::from_bytes(&bytes).map_err(|e| err(&self.path, format!("damaged header: {e}")))?;
        Ok(Some((identity, (HEADER_FIXED + n) as u64)))
    }

    fn not_a_journal(&self) -> Error {
        err(&self.path, "this file is not an adparallelengine journal (it is left as it is)")
    }

    /// Empties the file and writes the header of `identity`.
    fn start_over(&mut self, identity: &Identity) -> Result<()> {
        let bytes = postcard::to_allocvec(identity).map_err(|e| err(&self.path, e))?;
        let mut head = Vec::with_capacity(HEADER_FIXED + bytes.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        head.extend_from_slice(&check(&[&bytes]).to_le_bytes());
        head.extend_from_slice(&bytes);
        self.file.set_len(0).map_err(|e| err(&self.path, e))?;
        self.file.write_all_at(&head, 0).map_err(|e| err(&self.path, e))?;
        // Only a policy that syncs every few items syncs the header: under the others a
        // header lost to a power cut is a torn header, and a torn header is a new journal.
        if matches!(self.sync, JournalSync::EveryItems(_)) {
            self.file.sync_data().map_err(|e| err(&self.path, e))?;
        }
        self.end = head.len() as u64;
        Ok(())
    }

    /// Reads every record after the header, checking each; cuts the file after the last good
    /// one.
    fn scan(&mut self, len: u64) -> Result<Vec<RecordAt>> {
        let mut records = Vec::new();
        let mut reader = BufReader::with_capacity(1 << 20, ReadAt { file: &self.file, at: self.end });
        let mut at = self.end;
        let mut payload = Vec::new();
        let good = loop {
            let mut head = [0u8; RECORD_HEADER];
            if len - at < RECORD_HEADER as u64 || reader.read_exact(&mut head).is_err() {
                break at;
            }
            let plen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let start = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
            let sum = u64::from_le_bytes(head[16..24].try_into().unwrap_or([0; 8]));
            let body = at + RECORD_HEADER as u64;
            if count == 0 || len - body < plen as u64 {
                break at;
            }
            payload.resize(plen as usize, 0);
            if reader.read_exact(&mut payload).is_err() || check(&[&head[..16], &payload]) != sum {
                break at;
            }
            let Ok(start) = usize::try_from(start) else { break at };
            if start.checked_add(count).is_none() {
                break at;
            }
            records.push(RecordAt { start, count, offset: body, len: plen });
            at = body + plen as u64;
        };
        if good < len {
            tracing::warn!(path = %self.path.display(), bytes = len - good, "journal: a torn or damaged tail was cut off");
            self.file.set_len(good).map_err(|e| err(&self.path, e))?;
        }
        self.end = good;
        Ok(records)
    }

    /// Appends the record of the items `start..start + count`, whose encodings `payload` holds.
    pub(crate) fn append(&mut self, start: usize, count: usize, payload: &[u8]) -> Result<()> {
        let plen = u32::try_from(payload.len()).map_err(|_| {
            err(&self.path, format!("a record of {} bytes is too large (4 GiB at most)", payload.len()))
        })?;
        let count32 = u32::try_from(count).map_err(|_| err(&self.path, "a record of too many items"))?;
        let mut head = [0u8; RECORD_HEADER];
        head[0..4].copy_from_slice(&plen.to_le_bytes());
        head[4..8].copy_from_slice(&count32.to_le_bytes());
        head[8..16].copy_from_slice(&(start as u64).to_le_bytes());
        let sum = check(&[&head[..16], payload]);
        head[16..24].copy_from_slice(&sum.to_le_bytes());
        // The head, then the payload from where it lies (the outputs' own memory, for plain
        // numbers): never copied into one buffer. A kill between or during the writes tears
        // this record only, and its check finds it.
        let append = |at: u64, bytes: &[u8]| {
            self.file.write_all_at(bytes, at).map_err(|e| err(&self.path, format!("cannot append: {e}")))
        };
        append(self.end, &head)?;
        append(self.end + RECORD_HEADER as u64, payload)?;
        self.end += (RECORD_HEADER + payload.len()) as u64;
        self.unsynced = self.unsynced.saturating_add((count as u64).max(1));
        let due = match self.sync {
            JournalSync::Interval(every) => self.last_sync.elapsed() >= every,
            JournalSync::EveryItems(n) => self.unsynced >= n.max(1),
            JournalSync::Never => false,
        };
        if due {
            self.sync_now()?;
        }
        Ok(())
    }

    /// The job is over: what was appended and not synced yet goes to disk. Under
    /// `EveryItems`, now; under `Interval`, on a thread of its own, through a second handle
    /// of the file (no lock: a rerun may open the journal at once), so that the job's end
    /// never waits for the disk (an `fdatasync` took 10–40 ms here, 13–75× a job of a million
    /// tiny items); under `Never`, not at all. A process that exits before that thread is
    /// done loses nothing it wrote: its pages are the kernel's.
    pub(crate) fn sync_at_end(&mut self) -> Result<()> {
        match self.sync {
            JournalSync::EveryItems(_) => self.sync_now(),
            JournalSync::Never => Ok(()),
            JournalSync::Interval(_) if self.unsynced == 0 => Ok(()),
            JournalSync::Interval(_) => {
                self.unsynced = 0;
                self.last_sync = Instant::now();
                let Ok(file) = File::open(&self.path) else { return Ok(()) };
                let path = self.path.clone();
                let spawned = std::thread::Builder::new().name("adparallelengine-journal-sync".into()).spawn(move || {
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(path = %path.display(), error = %e, "journal: the last records could not be synced");
                    }
                });
                // No thread to spare: the kernel writes the pages back in its own time.
                if let Err(e) = spawned {
                    tracing::debug!(error = %e, "journal: no thread for the last sync");
                }
                Ok(())
            }
        }
    }

    /// Forces what was appended to disk (unless the policy is `Never`).
    pub(crate) fn sync_now(&mut self) -> Result<()> {
        if self.unsynced > 0 && self.sync != JournalSync::Never {
            self.file.sync_data().map_err(|e| err(&self.path, format!("cannot sync: {e}")))?;
        }
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// The payload of `record`.
    pub(crate) fn read(&self, record: &RecordAt) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; record.len as usize];
        self.file.read_exact_at(&mut bytes, record.offset).map_err(|e| err(&self.path, format!("cannot read: {e}")))?;
        Ok(bytes)
    }

    /// The journal's file.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Sequential reads from an offset, without moving the file's cursor.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Takes the journal for this job: a second job (in this process or another) on the same
/// file gets an error, not interleaved records.
fn lock(file: &File) -> std::result::Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns for the call; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err("the journal is in use by another job (it is locked)".into()),
        _ => Err(format!("cannot lock the journal: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(version: &str) -> Identity {
        Identity {
            task: "t".into(),
            version: version.into(),
            item_type: "u64".into(),
            output_type: "u64".into(),
            args: "a".into(),
            init: "i".into(),
            shared: "s".into(),
            len: Some(10),
        }
    }

    fn dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "adpe-journal-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let d = dir();
        let j = Journal::at(d.0.join("j"));
        let (mut f, recs) = JournalFile::open(&j, &identity("1")).unwrap();
        assert!(recs.is_empty());
        f.append(0, 2, b"ab").unwrap();
        f.append(5, 1, b"xyz").unwrap();
        drop(f);
        let full = std::fs::metadata(&j.path).unwrap().len();
        // A third record torn half way: its header and part of its payload.
        let (mut f, recs) = JournalFile::open(&j, &identity("1")).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(f.read(&recs[1]).unwrap(), b"xyz");
        f.append(7, 3, b"0123456789").unwrap();
        drop(f);
        let file = OpenOptions::new().write(true).open(&j.path).unwrap();
        file.set_len(full + 30).unwrap();
        drop(file);
        let (_f, recs) = JournalFile::open(&j, &identity("1")).unwrap();
        assert_eq!(recs.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(), vec![(0, 2), (5, 1)]);
        assert_eq!(std::fs::metadata(&j.path).unwrap().len(), full, "the torn record was cut off");
    }

    #[test]
    fn every_items_syncs_once_n_items_were_appended() {
        let d = dir();
        let j = Journal::at(d.0.join("j")).sync(JournalSync::EveryItems(5));
        let (mut f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        f.append(0, 3, b"abc").unwrap();
        assert_eq!(f.unsynced, 3, "3 items of 5: not synced yet");
        f.append(3, 1, b"d").unwrap();
        assert_eq!(f.unsynced, 4);
        f.append(4, 3, b"efg").unwrap();
        assert_eq!(f.unsynced, 0, "7 items: synced at the record that passed 5");
        f.append(7, 2, b"hi").unwrap();
        assert_eq!(f.unsynced, 2);
        f.sync_at_end().unwrap();
        assert_eq!(f.unsynced, 0, "synced at the end of the job");
        // Interval: nothing is due before the interval, whatever the count.
        let j = Journal::at(d.0.join("k")).sync(JournalSync::Interval(std::time::Duration::from_secs(3600)));
        let (mut f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        for i in 0..100 {
            f.append(i, 1, b"x").unwrap();
        }
        assert_eq!(f.unsynced, 100);
    }

    #[test]
    fn a_flipped_byte_ends_the_good_records_there() {
        let d = dir();
        let j = Journal::at(d.0.join("j"));
        let (mut f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        f.append(0, 1, b"first").unwrap();
        let second = f.end;
        f.append(1, 1, b"second").unwrap();
        drop(f);
        let mut bytes = std::fs::read(&j.path).unwrap();
        let at = second as usize + RECORD_HEADER + 2;
        bytes[at] ^= 1;
        std::fs::write(&j.path, &bytes).unwrap();
        let (_f, recs) = JournalFile::open(&j, &identity("1")).unwrap();
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn another_jobs_journal_is_refused_or_discarded() {
        let d = dir();
        let j = Journal::at(d.0.join("j"));
        let (mut f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        f.append(0, 1, b"x").unwrap();
        drop(f);
        let e = JournalFile::open(&j, &identity("2")).err().unwrap();
        assert!(e.to_string().contains("version: the journal's is `1`, this job's `2`"), "{e}");
        let (_f, recs) = JournalFile::open(&j.clone().discard_mismatched(), &identity("2")).unwrap();
        assert!(recs.is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_left_alone() {
        let d = dir();
        let p = d.0.join("notes.txt");
        std::fs::write(&p, b"precious notes").unwrap();
        let e = JournalFile::open(&Journal::at(&p).discard_mismatched(), &identity("1")).err().unwrap();
        assert!(e.to_string().contains("not an adparallelengine journal"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"precious notes");
    }

    #[test]
    fn a_journal_of_an_older_format_is_named_and_left_alone() {
        let d = dir();
        let j = Journal::at(d.0.join("j"));
        let (mut f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        f.append(0, 1, b"x").unwrap();
        drop(f);
        let mut bytes = std::fs::read(&j.path).unwrap();
        bytes[7] = 1;
        std::fs::write(&j.path, &bytes).unwrap();
        let e = JournalFile::open(&j.clone().discard_mismatched(), &identity("1")).err().unwrap();
        assert!(e.to_string().contains("a journal in format 1 written by another version"), "{e}");
        assert_eq!(std::fs::read(&j.path).unwrap(), bytes, "left as it is");
    }

    #[test]
    fn a_journal_in_use_is_refused() {
        let d = dir();
        let j = Journal::at(d.0.join("j"));
        let (_f, _) = JournalFile::open(&j, &identity("1")).unwrap();
        let e = JournalFile::open(&j, &identity("1")).err().unwrap();
        assert!(e.to_string().contains("in use by another job"), "{e}");
    }
}
