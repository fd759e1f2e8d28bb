//! The build fingerprint exchanged in the worker handshake: a worker running another build
//! of the program than its driver refuses to work, with a clear error, instead of
//! misinterpreting messages.
//!
//! On Linux it is the executable's GNU build ID (a hash of the whole linked image, written by
//! the linker and read here from this process's own memory: free). Elsewhere, or when the
//! linker wrote none, it is the executable's size and a hash of its first and last MiB and of
//! 64 blocks spread across it.

use std::sync::OnceLock;

/// This build's fingerprint.
pub fn fingerprint() -> &'static str {
    static FP: OnceLock<String> = OnceLock::new();
    FP.get_or_init(|| match build_id() {
        Some(id) => format!("build-id-{id}"),
        None => sampled_file_hash(),
    })
}

#[cfg(target_os = "linux")]
fn build_id() -> Option<String> {
    use std::ffi::c_void;

    unsafe extern "C" fn first_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the `Option<String>` passed below; `info` is valid for this call.
        let (out, info) = unsafe { (&mut *(data as *mut Option<String>), &*info) };
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers (dl_iterate_phdr(3)).
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type != libc::PT_NOTE {
                continue;
            }
            let start = (info.dlpi_addr as usize + ph.p_vaddr as usize) as *const u8;
            // SAFETY: a loaded PT_NOTE segment is mapped readable for `p_memsz` bytes at
            // `dlpi_addr + p_vaddr`, for as long as the object stays loaded (this call).
            let notes = unsafe { std::slice::from_raw_parts(start, ph.p_memsz as usize) };
            if let Some(id) = gnu_build_id(notes) {
                *out = Some(id);
                break;
            }
        }
        // The first object is the main executable: stop after it.
        1
    }

    let mut out: Option<String> = None;
    // SAFETY: the callback only reads the program headers and notes the loader gives it.
    unsafe { libc::dl_iterate_phdr(Some(first_object), &mut out as *mut Option<String> as *mut c_void) };
    out
}

#[cfg(not(target_os = "linux"))]
fn build_id() -> Option<String> {
    None
}

/// Finds the `NT_GNU_BUILD_ID` note in a PT_NOTE segment.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn gnu_build_id(mut notes: &[u8]) -> Option<String> {
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]) as usize;
        let (namesz, descsz, kind) = (word(0), word(4), word(8));
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > notes.len() {
            return None;
        }
        if kind == 3 && namesz == 4 && &notes[12..16] == b"GNU\0" {
            return Some(notes[name_end..name_end + descsz].iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = &notes[desc_end..];
    }
    None
}

fn sampled_file_hash() -> String {
    use std::hash::Hasher;
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(std::env::current_exe()?)?;
        let len = f.metadata()?.len();
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(0x6164_7061, 0x7261_6c6c);
        let mut buf = vec![0u8; 1 << 20];
        let mut sample = |f: &mut std::fs::File, at: u64, n: usize| -> std::io::Result<()> {
            f.seek(SeekFrom::Start(at))?;
            let n = n.min(buf.len());
            let got = f.read(&mut buf[..n])?;
            h.write(&buf[..got]);
            Ok(())
        };
        sample(&mut f, 0, 1 << 20)?;
        for k in 1..64u64 {
            sample(&mut f, len * k / 64, 4096)?;
        }
        sample(&mut f, len.saturating_sub(1 << 20), 1 << 20)?;
        Ok(format!("file-{len}-{:016x}", h.finish()))
    };
    read().unwrap_or_else(|e| format!("unreadable-exe-{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_specific() {
        let fp = fingerprint();
        assert_eq!(fp, fingerprint());
        #[cfg(target_os = "linux")]
        assert!(fp.starts_with("build-id-") && fp.len() > 20, "{fp}");
        assert!(sampled_file_hash().starts_with("file-"));
    }

    #[test]
    fn parses_a_gnu_build_id_note() {
        let mut note = vec![];
        for w in [4u32, 3, 3] {
            note.extend_from_slice(&w.to_ne_bytes());
        }
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        assert_eq!(gnu_build_id(&note).as_deref(), Some("abcdef"));
        assert_eq!(gnu_build_id(&note[..10]), None);
    }
}
