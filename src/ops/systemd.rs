//! Telling systemd how the service is doing, for a unit with `Type=notify` (see
//! `deploy/systemd/`): `READY=1` once subscribed to Realtime, `WATCHDOG=1` while the service's own
//! loops turn, `STOPPING=1` as soon as shutdown begins.
//!
//! The protocol (sd_notify(3)) is one datagram per message, newline-separated `KEY=VALUE` lines,
//! sent to the Unix socket named by `$NOTIFY_SOCKET`: a file system path, or `@name` for the
//! abstract namespace. `$WATCHDOG_USEC` asks for a `WATCHDOG=1` at least that often (we ping at
//! half of it), for the process named by `$WATCHDOG_PID` when that is set. Without
//! `$NOTIFY_SOCKET` (Cloud Run, a shell) nothing is sent and no thread runs.
//!
//! Invariants: the watchdog is fed only while `/livez` would answer 200, so systemd restarts
//! exactly what the liveness probe would (a wedged loop, never an outage of Supabase or Twilio);
//! `READY=1` is sent once, and `STOPPING=1` once, before the service's drain begins.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::ops::health::{Health, Link};
use crate::shutdown::Shutdown;

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket in the file system.
    Path(PathBuf),
    /// A socket in the abstract namespace (`@name`; the name without the `@`).
    Abstract(Vec<u8>),
}

/// Read `$NOTIFY_SOCKET`: `Ok(None)` when unset or empty (not run by systemd), an error for a
/// value this module cannot use.
pub fn target(value: Option<&str>) -> Result<Option<Target>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(v) if v.starts_with('/') => Ok(Some(Target::Path(PathBuf::from(v)))),
        Some(v) if v.len() > 1 && v.starts_with('@') => {
            Ok(Some(Target::Abstract(v.as_bytes()[1..].to_vec())))
        }
        Some(v) => Err(format!(
            "NOTIFY_SOCKET={v:?} is neither an absolute path nor @name; not notifying systemd"
        )),
    }
}

/// The watchdog ping interval asked for by `$WATCHDOG_USEC` (half of it), if the request is
/// meant for this process (`$WATCHDOG_PID` unset or equal to `own_pid`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(str::trim) {
        None | Some("") => {}
        Some(p) if p.parse::<u32>().ok() == Some(own_pid) => {}
        Some(_) => return None,
    }
    Some(Duration::from_micros(usec / 2))
}

/// The notifier and the watchdog interval systemd asked for through the environment, or `None`
/// when not run by systemd (or the socket cannot be used: logged, and the service runs anyway).
pub fn from_environment() -> Option<(Notifier, Option<Duration>)> {
    let var = |name: &str| std::env::var(name).ok();
    let target = match target(var("NOTIFY_SOCKET").as_deref()) {
        Ok(t) => t?,
        Err(e) => {
            warn!("{e}");
            return None;
        }
    };
    let notifier = Notifier::open(&target)
        .map_err(|e| {
            warn!("NOTIFY_SOCKET: cannot open a datagram socket: {e}; not notifying systemd")
        })
        .ok()?;
    let watchdog = watchdog_interval(
        var("WATCHDOG_USEC").as_deref(),
        var("WATCHDOG_PID").as_deref(),
        std::process::id(),
    );
    Some((notifier, watchdog))
}

/// An unbound datagram socket and the address of systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// Open the socket (nothing is sent yet).
    pub fn open(target: &Target) -> io::Result<Notifier> {
        let address = match target {
            Target::Path(path) => SocketAddr::from_pathname(path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Notifier { socket, address })
    }

    /// Send one message (`"READY=1\nSTATUS=…"`).
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(drop)
    }
}

/// What the notification thread watches.
pub struct Watch {
    /// The socket systemd listens on.
    pub notifier: Notifier,
    /// Readiness: the first time the link is [`Link::Connected`] (subscribed).
    pub health: Health,
    /// Half of `$WATCHDOG_USEC`, if systemd asked for pings.
    pub watchdog: Option<Duration>,
    /// The names of the loops `/livez` would report as stalled now (empty: alive).
    pub stalled: Box<dyn Fn() -> Vec<&'static str> + Send>,
    /// Fires at SIGTERM/SIGINT.
    pub shutdown: Shutdown,
}

/// How often readiness is looked at until the service is subscribed.
const READINESS_POLL: Duration = Duration::from_millis(50);

/// Start the notification thread (detached: it ends once it has sent `STOPPING=1`).
pub fn spawn(watch: Watch) -> io::Result<()> {
    crate::sync::spawn_named("systemd-notify", 64 * 1024, move || run(watch)).map(drop)
}

fn run(watch: Watch) {
    let send = |message: &str| {
        if let Err(e) = watch.notifier.send(message) {
            warn!("cannot notify systemd ({}): {e}", first_line(message));
        }
    };
    let mut ready = false;
    let mut withheld = false;
    let mut next_ping = Instant::now();
    loop {
        if !ready && watch.health.link() == Link::Connected {
            send("READY=1\nSTATUS=subscribed to Realtime");
            debug!("told systemd: ready");
            ready = true;
        }
        let now = Instant::now();
        if let Some(interval) = watch.watchdog.filter(|_| now >= next_ping) {
            let stalled = (watch.stalled)();
            if stalled.is_empty() {
                send("WATCHDOG=1");
                withheld = false;
            } else if !withheld {
                warn!(
                    "not feeding the systemd watchdog: stalled loop(s) {}",
                    stalled.join(", ")
                );
                withheld = true;
            }
            next_ping = now + interval;
        }
        let until_ping = watch
            .watchdog
            .map(|_| next_ping.saturating_duration_since(Instant::now()));
        let wait = match (ready, until_ping) {
            (false, Some(p)) => p.min(READINESS_POLL),
            (false, None) => READINESS_POLL,
            (true, Some(p)) => p,
            (true, None) => Duration::from_secs(3600),
        };
        if !watch.shutdown.sleep(wait) {
            send("STOPPING=1\nSTATUS=draining in-flight sends");
            return;
        }
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values() {
        assert_eq!(target(None), Ok(None));
        assert_eq!(target(Some("")), Ok(None));
        assert_eq!(
            target(Some("/run/systemd/notify")),
            Ok(Some(Target::Path("/run/systemd/notify".into())))
        );
        assert_eq!(
            target(Some("@/org/freedesktop/systemd1/notify/123")),
            Ok(Some(Target::Abstract(
                b"/org/freedesktop/systemd1/notify/123".to_vec()
            )))
        );
        for bad in ["@", "relative/path", "vsock:2:1234"] {
            let e = target(Some(bad)).unwrap_err();
            assert!(e.starts_with("NOTIFY_SOCKET="), "{e}");
        }
    }

    #[test]
    fn watchdog_interval_is_half_the_request_for_this_process_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some(""), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_reach_a_datagram_socket() {
        let dir = std::env::temp_dir().join(format!("sms-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(&Target::Path(path.clone())).unwrap();
        notifier.send("READY=1\nSTATUS=x").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
