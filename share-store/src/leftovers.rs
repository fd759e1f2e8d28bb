//! Whose a store directory is, and sweeping the ones whose owner is gone.
//!
//! A store removes its directory on drop and on Ctrl-C, but a process killed outright
//! (SIGKILL, the OOM killer, a pod or MPI rank killed with its container) cannot. So every
//! directory's name says who made it:
//!
//! - `adparallelengine-<pid>-<start>-<host>-<random>` for a driver's store
//!   ([`DirStore::create`](crate::DirStore::create)),
//! - `adparallelengine-local-<pid>-<start>-<host>-<random>` for a worker's local store
//!   ([`local_dir_store`](crate::local_dir_store)),
//!
//! where `<pid>` is the owner's process id, `<start>` its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot: a recycled pid has another one), `<host>` 8 hex
//! digits hashed from the machine's boot id and the owner's pid namespace, and `<random>` 16
//! hex digits. Each new store sweeps its parent directory once: a directory whose name matches
//! exactly, that is a real directory (not a symlink), owned by the same user and of mode 0700,
//! made on this machine since this boot in this pid namespace (the same `<host>`), and whose
//! owner pid is gone, a zombie, or now another process (another start time) is removed.
//!
//! `<host>` is what makes this safe on a `path_shared` that several machines or containers see
//! (NFS, a volume mounted in several pods): a pid is only looked up in `/proc` where it means
//! something. Directories named the way stores were before (`adparallelengine-<pid>-<16 hex>`,
//! also what a store is named where `/proc` cannot say who it is) are never swept, for that
//! very reason: nothing in them says where their pid lives, and a pid that is gone here may be
//! a live driver on another machine. Such leftovers must be removed by hand.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Start of every store directory's name.
pub(crate) const PREFIX: &str = "adparallelengine-";
/// What follows [`PREFIX`] in a worker's local store's name.
const LOCAL: &str = "local-";

/// Who a store belongs to, for its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A driver's store of shared values (`DirStore::create`, `LazyDirStore::new`).
    Driver,
    /// A worker's private store of values shipped to it (`local_dir_store`).
    Worker,
}

impl Role {
    /// The start of its directories' names.
    fn prefix(self) -> &'static str {
        match self {
            Role::Driver => PREFIX,
            Role::Worker => "adparallelengine-local-",
        }
    }
}

/// A process as a directory name records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Its process id.
    pub(crate) pid: u32,
    /// Its start time, in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub(crate) start: u64,
    /// Which machine, boot and pid namespace the pid belongs to (see [`host_tag`]).
    pub(crate) host: u32,
}

impl Owner {
    /// This process, or `None` where `/proc` does not tell (not Linux, `/proc` not mounted):
    /// then its stores get names no sweep touches.
    pub(crate) fn me() -> Option<Owner> {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let (_, start) = parse_stat(&stat)?;
        Some(Owner { pid: std::process::id(), start, host: host_tag()? })
    }
}

/// The name of a store directory of `role` made by `owner`.
pub(crate) fn dir_name(role: Role, owner: &Owner, random: u64) -> String {
    format!("{}{}-{}-{:08x}-{random:016x}", role.prefix(), owner.pid, owner.start, owner.host)
}

/// The name a store gets where [`Owner::me`] is unknown: the pre-sweep format, never swept.
pub(crate) fn legacy_dir_name(role: Role, random: u64) -> String {
    format!("{}{}-{random:016x}", role.prefix(), std::process::id())
}

/// The role and owner of a directory named exactly by [`dir_name`]; `None` for anything else.
pub(crate) fn parse_name(name: &str) -> Option<(Role, Owner)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (role, rest) = match rest.strip_prefix(LOCAL) {
        Some(rest) => (Role::Worker, rest),
        None => (Role::Driver, rest),
    };
    let mut fields = rest.split('-');
    let pid = decimal(fields.next()?)?;
    let start = decimal(fields.next()?)?;
    let host = hex(fields.next()?, 8)?;
    let _random = hex(fields.next()?, 16)?;
    if fields.next().is_some() {
        return None;
    }
    let pid = u32::try_from(pid).ok().filter(|p| *p > 0)?;
    let host = u32::try_from(host).ok()?;
    Some((role, Owner { pid, start, host }))
}

/// A decimal number as `{}` writes it: digits only, no sign, no leading zero (but `0`).
fn decimal(s: &str) -> Option<u64> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if plain {
        s.parse().ok()
    } else {
        None
    }
}

/// Exactly `len` lowercase hex digits, as `{:0len$x}` writes them.
fn hex(s: &str, len: usize) -> Option<u64> {
    let plain = s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if plain {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// The state (field 3) and start time (field 22) of a `/proc/<pid>/stat` line.
///
/// Field 2, the command name in parentheses, may itself hold spaces and parentheses: the
/// fields after it start after the *last* `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4 to 21 come between the state and the start time.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// 32 bits naming this machine since its boot (`/proc/sys/kernel/random/boot_id`) and this
/// process's pid namespace (`/proc/self/ns/pid`): where a pid in a name can be looked up.
fn host_tag() -> Option<u32> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(fold(fnv1a([boot.trim().as_bytes(), &[0], ns.as_os_str().as_encoded_bytes()])))
}

/// 64-bit FNV-1a of the concatenated parts: a hash that is the same in every process.
fn fnv1a<const N: usize>(parts: [&[u8]; N]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn fold(h: u64) -> u32 {
    // Truncation intended: both halves are mixed into the low 32 bits.
    ((h >> 32) ^ h) as u32
}

/// What `/proc` says of a directory's owner now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The same process is running: its directory is in use.
    Alive,
    /// No such process, or only its zombie: it can never remove its directory.
    Gone,
    /// The pid is another process now (started at this other time).
    Recycled(u64),
    /// `/proc` would not say (a permission error, an unreadable line): leave it.
    Unknown,
}

fn fate(owner: &Owner) -> Fate {
    match fs::read_to_string(format!("/proc/{}/stat", owner.pid)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Fate::Gone,
        // ESRCH: the process ended while its line was read.
        Err(e) if e.raw_os_error() == Some(3) => Fate::Gone,
        Err(_) => Fate::Unknown,
        Ok(stat) => match parse_stat(&stat) {
            None => Fate::Unknown,
            Some((_, start)) if start != owner.start => Fate::Recycled(start),
            Some(('Z' | 'X', _)) => Fate::Gone,
            Some(_) => Fate::Alive,
        },
    }
}

/// Removes from `parent` the store directories whose owner is gone (see the module's doc);
/// returns them. `me` is this process; `ours` is the directory this process just made there,
/// whose owner and mode are what a store directory of this user looks like.
///
/// Errors are logged, never returned: a sweep that cannot finish leaves more behind, and the
/// new store works all the same.
#[cfg(unix)]
pub(crate) fn sweep(parent: &Path, me: &Owner, ours: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = Vec::new();
    let uid = match fs::symlink_metadata(ours) {
        Ok(m) => m.uid(),
        Err(e) => {
            tracing::debug!(dir = %ours.display(), error = %e, "no sweep: cannot inspect the new store directory");
            return removed;
        }
    };
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(dir = %parent.display(), error = %e, "no sweep: cannot list the directory");
            return removed;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((role, owner)) = name.to_str().and_then(parse_name) else { continue };
        let path = entry.path();
        if path == ours || owner.host != me.host {
            continue;
        }
        // Not followed: a symlink is no directory of ours, whatever it points to.
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o7777 != 0o700 {
            continue;
        }
        let fate = fate(&owner);
        let reason = match fate {
            Fate::Alive | Fate::Unknown => continue,
            Fate::Gone => "its process is gone".to_string(),
            Fate::Recycled(start) => {
                format!("its pid is another process now (started at {start}, not {})", owner.start)
            }
        };
        // `remove_dir_all` follows no symlink: one inside is removed, not what it points to.
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(
                    dir = %path.display(),
                    pid = owner.pid,
                    start = owner.start,
                    ?role,
                    "removed a share-store directory left behind: {reason}"
                );
                removed.push(path);
            }
            // Another store's sweep got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                dir = %path.display(),
                error = %e,
                "cannot remove a share-store directory left behind ({reason})"
            ),
        }
    }
    removed
}

/// No sweep where there is no `/proc` to ask.
#[cfg(not(unix))]
pub(crate) fn sweep(_parent: &Path, _me: &Owner, _ours: &Path) -> Vec<PathBuf> {
    Vec::new()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const SAMPLE: Owner = Owner { pid: 1234, start: 5678, host: 0xdead_beef };

    /// A directory private to one test under the temp dir, empty.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("share-store-sweep-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Makes `parent/name` the way a store does (mode 0700).
    fn store_dir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join("k.bin"), b"value").unwrap();
        dir
    }

    /// A pid no process can have: pids are below `pid_max`.
    fn impossible_pid() -> u32 {
        let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        max + 1
    }

    fn me() -> Owner {
        Owner::me().expect("/proc says who this process is")
    }

    #[test]
    fn names_say_whose_they_are() {
        assert_eq!(
            dir_name(Role::Driver, &SAMPLE, 0x0123_4567_89ab_cdef),
            "adparallelengine-1234-5678-deadbeef-0123456789abcdef"
        );
        assert_eq!(dir_name(Role::Worker, &SAMPLE, 1), "adparallelengine-local-1234-5678-deadbeef-0000000000000001");
        let small = Owner { pid: 1, start: 0, host: 7 };
        assert_eq!(dir_name(Role::Driver, &small, 0), "adparallelengine-1-0-00000007-0000000000000000");
        for role in [Role::Driver, Role::Worker] {
            for owner in [SAMPLE, small, Owner { pid: u32::MAX, start: u64::MAX, host: u32::MAX }] {
                assert_eq!(parse_name(&dir_name(role, &owner, u64::MAX)), Some((role, owner)));
            }
        }
        let legacy = legacy_dir_name(Role::Driver, 0xab);
        assert_eq!(legacy, format!("adparallelengine-{}-00000000000000ab", std::process::id()));
        assert_eq!(parse_name(&legacy), None, "old-style names are never swept");
        assert_eq!(parse_name(&legacy_dir_name(Role::Worker, 0xab)), None);
    }

    #[test]
    fn this_process_is_its_pid_and_its_start_time() {
        let me = me();
        assert_eq!(me.pid, std::process::id());
        // Field 22, counted by hand from the line.
        let stat = fs::read_to_string(format!("/proc/{}/stat", me.pid)).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let field22: u64 = after.split(' ').nth(22 - 3).unwrap().parse().unwrap();
        assert_eq!(me.start, field22);
        assert!(me.start > 0);
        assert_eq!(Owner::me(), Some(me), "the same every time");
        assert_eq!(fate(&me), Fate::Alive);
    }

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let tail = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21 22";
        assert_eq!(parse_stat(&format!("77 (cargo) S {tail}")), Some(('S', 424242)));
        assert_eq!(parse_stat(&format!("77 (a b) (c)) Z {tail}")), Some(('Z', 424242)));
        assert_eq!(parse_stat("77 (cargo) S 1 2 3"), None, "too short");
        assert_eq!(parse_stat(&format!("77 cargo S {tail}")), None, "no command name");
        assert_eq!(parse_stat("77 (x) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 20"), None);
    }

    #[test]
    fn only_exact_names_parse() {
        let good = "adparallelengine-1234-5678-deadbeef-0123456789abcdef";
        assert!(parse_name(good).is_some());
        for bad in [
            "",
            "adparallelengine-",
            "adparallelengine-1234-0123456789abcdef",                // old style
            "adparallelengine-1234-5678-deadbeef-0123456789abcdef-", // trailing dash
            "adparallelengine-1234-5678-deadbeef-0123456789abcdef-1", // extra field
            "adparallelengine-1234-5678-deadbeef-0123456789abcdefx", // trailing character
            "adparallelengine-1234-5678-deadbeef-0123456789ABCDEF",  // uppercase
            "adparallelengine-1234-5678-deadbeef-0123456789abcde",   // 15 digits
            "adparallelengine-1234-5678-deadbee-0123456789abcdef",   // 7 digits
            "adparallelengine-1234-5678-deadbeef0-123456789abcdef",
            "adparallelengine-01234-5678-deadbeef-0123456789abcdef", // leading zero
            "adparallelengine-1234-05678-deadbeef-0123456789abcdef",
            "adparallelengine-+1234-5678-deadbeef-0123456789abcdef", // sign
            "adparallelengine-0-5678-deadbeef-0123456789abcdef",     // pid 0
            "adparallelengine-4294967296-5678-deadbeef-0123456789abcdef", // pid over u32
            "adparallelengine-1234-18446744073709551616-deadbeef-0123456789abcdef",
            "adparallelengine--5678-deadbeef-0123456789abcdef",
            "adparallelengine-local-local-1234-5678-deadbeef-0123456789abcdef",
            "adparallelengine-remote-1234-5678-deadbeef-0123456789abcdef",
            "Adparallelengine-1234-5678-deadbeef-0123456789abcdef",
            "xadparallelengine-1234-5678-deadbeef-0123456789abcdef",
            " adparallelengine-1234-5678-deadbeef-0123456789abcdef",
            "adparallelengine-1234-5678-deadbeef-0123456789abcdef.bin",
            "adparallelengine-1234-5678-deadbeef-0123456789abcdef/x",
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_name("adparallelengine-local-1-0-00000000-0000000000000000"),
            Some((Role::Worker, Owner { pid: 1, start: 0, host: 0 }))
        );
    }

    #[test]
    fn the_sweep_removes_what_dead_owners_left_and_nothing_else() {
        let parent = scratch("sweep");
        let me = me();
        let ours = store_dir(&parent, &dir_name(Role::Driver, &me, 1));
        let dead = Owner { pid: impossible_pid(), ..me };
        let recycled = Owner { start: me.start + 1, ..me };
        let elsewhere = Owner { host: me.host ^ 1, ..dead };

        // Removed: a dead owner's, of both roles; a recycled pid's.
        let dead_driver = store_dir(&parent, &dir_name(Role::Driver, &dead, 2));
        let dead_worker = store_dir(&parent, &dir_name(Role::Worker, &dead, 3));
        let recycled_dir = store_dir(&parent, &dir_name(Role::Driver, &recycled, 4));
        // A dead owner's directory holding a symlink to a directory outside: the link goes,
        // what it points to stays.
        let outside = scratch("sweep-outside");
        fs::write(outside.join("precious"), b"keep").unwrap();
        symlink(&outside, dead_driver.join("link")).unwrap();

        // Kept: a live owner's (this process's other store), one made on another machine or
        // pid namespace, a file and a symlink named like a dead owner's directory, a dead
        // owner's directory of another mode, old-style and foreign names.
        let alive = store_dir(&parent, &dir_name(Role::Worker, &me, 5));
        let other_host = store_dir(&parent, &dir_name(Role::Driver, &elsewhere, 6));
        let file = parent.join(dir_name(Role::Driver, &dead, 7));
        fs::write(&file, b"not a directory").unwrap();
        let link = parent.join(dir_name(Role::Driver, &dead, 8));
        symlink(&outside, &link).unwrap();
        let open_mode = store_dir(&parent, &dir_name(Role::Driver, &dead, 9));
        fs::set_permissions(&open_mode, fs::Permissions::from_mode(0o755)).unwrap();
        let old_style = store_dir(&parent, &format!("adparallelengine-{}-0123456789abcdef", dead.pid));
        let foreign = store_dir(&parent, &format!("{}x", dir_name(Role::Driver, &dead, 10)));
        let unrelated = store_dir(&parent, "something-else");

        let mut removed = sweep(&parent, &me, &ours);
        removed.sort();
        let mut expected = vec![dead_driver.clone(), dead_worker.clone(), recycled_dir.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        for gone in &expected {
            assert!(!gone.exists(), "{} left", gone.display());
        }
        for kept in [&ours, &alive, &other_host, &file, &open_mode, &old_style, &foreign, &unrelated] {
            assert!(kept.exists(), "{} removed", kept.display());
        }
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink is left");
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep", "nothing followed a symlink");
        assert_eq!(fs::read(alive.join("k.bin")).unwrap(), b"value", "a live owner's files are untouched");
        assert!(sweep(&parent, &me, &ours).is_empty(), "a second sweep finds nothing");
        fs::remove_dir_all(&parent).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_zombie_owner_is_gone() {
        let parent = scratch("zombie");
        let me = me();
        let ours = store_dir(&parent, &dir_name(Role::Driver, &me, 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        // Not waited for: it stays a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let start = loop {
            let (state, start) = parse_stat(&fs::read_to_string(&stat).unwrap()).unwrap();
            if state == 'Z' {
                break start;
            }
            assert!(std::time::Instant::now() < deadline, "the child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let zombie = Owner { pid: child.id(), start, host: me.host };
        assert_eq!(fate(&zombie), Fate::Gone);
        let dir = store_dir(&parent, &dir_name(Role::Worker, &zombie, 2));
        assert_eq!(sweep(&parent, &me, &ours), vec![dir.clone()]);
        assert!(!dir.exists());
        assert!(child.wait().unwrap().success());
        fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn another_users_directory_is_left() {
        use std::os::unix::fs::MetadataExt;
        let parent = scratch("uid");
        let me = me();
        let ours = store_dir(&parent, &dir_name(Role::Driver, &me, 1));
        let dead = Owner { pid: impossible_pid(), ..me };
        let theirs = store_dir(&parent, &dir_name(Role::Driver, &dead, 2));
        let uid = fs::metadata(&ours).unwrap().uid();
        // Only root can give a directory away; others check the case through `ours`'s owner.
        if std::os::unix::fs::chown(&theirs, Some(uid ^ 1), None).is_ok() {
            assert!(sweep(&parent, &me, &ours).is_empty());
            assert!(theirs.exists(), "another user's directory was removed");
        } else {
            assert_eq!(sweep(&parent, &me, &ours), vec![theirs.clone()]);
        }
        fs::remove_dir_all(&parent).unwrap();
    }
}
