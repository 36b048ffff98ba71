//! systemd's service notification protocol (sd_notify(3)) without libsystemd: datagrams of
//! `KEY=value` lines to the Unix socket named by `NOTIFY_SOCKET`. Used for `Type=notify`
//! (READY=1 once every socket is open and the store is loaded, STOPPING=1 at shutdown) and the
//! watchdog (WATCHDOG=1, sent by the reporter only while every worker reports: a stuck worker
//! stops the pings and systemd restarts the service). Without `NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where to send notifications: the socket of `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of this process, if systemd (or a test) asked for notifications.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Sends one notification (e.g. `READY=1\nSTATUS=serving`).
    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, if the watchdog is on and meant for
/// this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
