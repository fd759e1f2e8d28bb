//! TCP keepalive for the connections between a driver and workers that dialed in over a
//! network (pods), so that a peer that vanished without a word is noticed by the kernel.
//!
//! A peer whose process dies is seen at once: its kernel closes the connection. A peer
//! whose *machine* goes away (a node lost, a network partition) sends nothing, and without
//! keepalive a read waits for ever: a worker pod would stay `Running` with no driver, its Job
//! never finished (so its TTL never starts), and a driver waiting for that pod's results
//! would hang. With [`keep_alive`] the kernel probes a connection that has been idle for
//! [`IDLE`], every [`INTERVAL`], and fails it after [`PROBES`] unanswered probes: a silent
//! peer is an error within about [`DEAD_AFTER`], which the driver handles as a lost worker
//! (its items re-run elsewhere) and a worker as the end of its driver.
//!
//! Probes cost one small packet per idle connection every few seconds, and a live peer's
//! kernel answers them however busy its program is, so a long item is never mistaken for a
//! dead peer.
//!
//! Keepalive only runs while the connection has no unacknowledged data. Data sent just before
//! the peer vanished is retried by TCP until `TCP_USER_TIMEOUT`, or without it until its
//! retransmission limit (`net.ipv4.tcp_retries2`, about 15 minutes by default). Linux applies
//! `TCP_USER_TIMEOUT` to a zero window too, so it may only be set where the peer always reads
//! promptly: the **worker's** side ([`keep_alive_worker`]), because the driver reads every
//! worker's messages as they come. Not the driver's: a worker reads its next batch only when it
//! is done with the current one, so a large prefetched batch can wait in a full window for as
//! long as an item takes. A driver that sent a batch in the very moment its pod vanished waits
//! for TCP's retransmission limit (or the job's `item_timeout`) for that pod's items.
//!
//! ```
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
//! adparallelengine_core::remote::keep_alive(&stream)?;
//! assert!(adparallelengine_core::remote::is_kept_alive(&stream)?);
//! assert_eq!(adparallelengine_core::remote::unacked_limit(&stream)?, None);
//! adparallelengine_core::remote::keep_alive_worker(&stream)?;
//! assert_eq!(adparallelengine_core::remote::unacked_limit(&stream)?, Some(adparallelengine_core::remote::DEAD_AFTER));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Idle time before the first probe.
pub const IDLE: Duration = Duration::from_secs(10);
/// Time between probes.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection fails.
pub const PROBES: u32 = 3;
/// About how long a vanished peer goes unnoticed on an idle connection.
pub const DEAD_AFTER: Duration = Duration::from_secs(IDLE.as_secs() + INTERVAL.as_secs() * PROBES as u64);

/// Turns keepalive on for `stream`: probes after 10 s idle, every 5 s, 3 of them ([`DEAD_AFTER`]).
pub fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, IDLE.as_secs() as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, INTERVAL.as_secs() as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, PROBES as libc::c_int)
}

/// [`keep_alive`], and data unacknowledged for [`DEAD_AFTER`] fails the connection too
/// (`TCP_USER_TIMEOUT`): for a worker's connection to its driver, which reads promptly.
pub fn keep_alive_worker(stream: &TcpStream) -> io::Result<()> {
    keep_alive(stream)?;
    set(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, DEAD_AFTER.as_millis() as libc::c_int)
}

/// Whether `stream` has keepalive on with this module's settings.
pub fn is_kept_alive(stream: &TcpStream) -> io::Result<bool> {
    let fd = stream.as_raw_fd();
    Ok(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0
        && get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE)? == IDLE.as_secs() as libc::c_int
        && get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL)? == INTERVAL.as_secs() as libc::c_int
        && get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT)? == PROBES as libc::c_int)
}

/// How long data may stay unacknowledged before the connection fails, if limited.
pub fn unacked_limit(stream: &TcpStream) -> io::Result<Option<Duration>> {
    let ms = get(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT)?;
    Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
}

fn set(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to an int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor, an int to write into and its size.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}
