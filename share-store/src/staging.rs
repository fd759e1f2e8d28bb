//! A store file being written: a private temporary file of the store's directory that is
//! removed unless it is renamed into place, and the writer that hashes the bytes on their way
//! into it (content addressing without holding the value in memory).

use adparallelengine_core::{KeyHasher, ShareKey};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Size of the pieces the bytes are hashed and written in: large enough that a write costs
/// one system call per piece, small enough that a piece hashed is still in the cache when it
/// is copied into the file.
const PIECE: usize = 1 << 20;

/// Writes at least this large (an Arrow column of a big table) are hashed on another thread
/// while they are written, rather than piece by piece in turn.
const OVERLAP: usize = 8 << 20;

/// A temporary file that is removed when dropped, unless [`persist`](Self::persist)ed: an
/// error, a panic or an early return while writing leaves nothing behind.
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl TempFile {
    /// Creates the new file `path` (failing if it exists), readable by its owner only.
    pub(crate) fn create(path: PathBuf) -> io::Result<TempFile> {
        let file = create_private_file(&path)?;
        Ok(TempFile { path, file, kept: false })
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, to write to.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Renames the file to `to`: from then on it is no longer temporary.
    pub(crate) fn persist(mut self, to: &Path) -> io::Result<()> {
        fs::rename(&self.path, to)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot remove a temporary store file")
            }
            _ => {}
        }
    }
}

/// Writes to a file through a buffer of [`PIECE`] bytes, hashing every byte as it goes.
///
/// Small writes (headers, padding, values encoded byte by byte) gather in the buffer; a large
/// one (an Arrow column) goes straight from the caller's memory to the file, piece by piece,
/// each piece hashed just before it is written.
pub(crate) struct HashingWriter<'a> {
    file: &'a mut File,
    hasher: KeyHasher,
    buf: Vec<u8>,
}

impl<'a> HashingWriter<'a> {
    pub(crate) fn new(file: &'a mut File) -> Self {
        HashingWriter { file, hasher: KeyHasher::new(), buf: Vec::with_capacity(PIECE) }
    }

    fn emit(file: &mut File, hasher: &mut KeyHasher, bytes: &[u8]) -> io::Result<()> {
        hasher.update(bytes);
        file.write_all(bytes)
    }

    fn drain(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            Self::emit(self.file, &mut self.hasher, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Hashes `bytes` on a second thread while this one copies them into the file: the put
    /// then costs the slower of the two, not their sum.
    fn hash_while_writing(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = &mut *self.file;
        let mut hasher = self.hasher.clone();
        let (hashed, written) = std::thread::scope(|s| {
            let hashing = std::thread::Builder::new().name("share-hash".into()).spawn_scoped(s, move || {
                hasher.update(bytes);
                hasher
            });
            let written = file.write_all(bytes);
            (hashing.map(|h| h.join()), written)
        });
        written?;
        match hashed {
            Ok(Ok(h)) => {
                self.hasher = h;
                Ok(())
            }
            Ok(Err(_)) => Err(io::Error::other("the thread hashing the shared value panicked")),
            // No thread to spare: hash here, after the write.
            Err(_) => {
                self.hasher.update(bytes);
                Ok(())
            }
        }
    }

    /// Writes what is buffered and returns the key of every byte written, and their number.
    pub(crate) fn finish(mut self) -> io::Result<(ShareKey, u64)> {
        self.drain()?;
        Ok((self.hasher.finish(), self.hasher.len()))
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if bytes.len() >= OVERLAP {
            self.drain()?;
            return self.hash_while_writing(bytes);
        }
        if self.buf.len() + bytes.len() <= PIECE {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        // Top the buffer up to a whole piece, then write whole pieces from `bytes` itself.
        if !self.buf.is_empty() {
            let take = PIECE - self.buf.len();
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.drain()?;
        }
        while bytes.len() >= PIECE {
            let (piece, rest) = bytes.split_at(PIECE);
            Self::emit(self.file, &mut self.hasher, piece)?;
            bytes = rest;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what is buffered to the file (the hash covers it either way).
    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

/// Creates the new file `path` (failing if it exists), readable by its owner only.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options.open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_cut_of_the_bytes_gives_the_key_and_the_file_of_all_of_them() {
        let dir = std::env::temp_dir().join(format!("share-store-staging-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..3 * PIECE + OVERLAP + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        // Cuts around the piece and buffer boundaries, and single bytes.
        let cuts: [&[usize]; 6] =
            [&[], &[1, 2, 3], &[PIECE - 1, PIECE + 1], &[7, 2 * PIECE + 3], &[PIECE, 15, 16, 17], &[3, OVERLAP + 5]];
        for (n, cut) in cuts.iter().enumerate() {
            let mut tmp = TempFile::create(dir.join(format!("t{n}"))).unwrap();
            let path = tmp.path().to_path_buf();
            let mut w = HashingWriter::new(tmp.file());
            let mut rest: &[u8] = &bytes;
            for &c in *cut {
                let (a, b) = rest.split_at(c.min(rest.len()));
                w.write_all(a).unwrap();
                rest = b;
            }
            w.write_all(rest).unwrap();
            let (key, len) = w.finish().unwrap();
            assert_eq!((key, len), (ShareKey::of(&bytes), bytes.len() as u64), "cut {cut:?}");
            assert!(fs::read(&path).unwrap() == bytes, "cut {cut:?}: the file holds other bytes");
            drop(tmp);
            assert!(!path.exists(), "a temporary file not persisted is removed on drop");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
