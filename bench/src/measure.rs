//! What the bench reads outside the service: the binary's size, `/proc`, and a timestamping
//! relay in front of the Supabase double.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sms_sender_doubles::harness::TempDir;

use crate::Results;

// ---------------------------------------------------------------------------------------------
// Sizes.

pub(crate) fn sizes(binary: &Path, r: &mut Results) {
    if let Ok(bytes) = std::fs::read(binary) {
        r.binary_bytes = Some(bytes.len() as u64);
        r.stripped = elf_has_section(&bytes, b".symtab").map(|has| !has);
    }
    r.binary_gzip = gzip_size(binary);
    r.image = Some(image_size(binary));
}

/// Build the image from `binary` as `make image` does (scripts/image.sh, into a temporary
/// directory) and read the sizes it prints: the layer tar and the gzip layer, in bytes.
fn image_size(binary: &Path) -> Result<(u64, u64), String> {
    // The workspace root, where the scripts live, is the parent of this crate.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh");
    let out_dir = TempDir::new("sms-bench-image");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(binary)
        .arg(&out_dir.0)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .lines()
            .next()
            .unwrap_or("scripts/image.sh failed")
            .to_string());
    }
    // "… (N bytes of layer tar; …), … (M bytes of gzip layer) …"
    let bytes_before = |marker: &str| -> Option<u64> {
        let head = &text[..text.find(marker)?];
        head.rsplit(['(', ' ']).next()?.parse().ok()
    };
    match (
        bytes_before(" bytes of layer tar"),
        bytes_before(" bytes of gzip layer"),
    ) {
        (Some(tar), Some(gz)) => Ok((tar, gz)),
        _ => Err(format!("unexpected output of scripts/image.sh: {text}")),
    }
}

/// Whether a 64-bit little-endian ELF file has a section of this name (`None`: not such a file).
fn elf_has_section(elf: &[u8], name: &[u8]) -> Option<bool> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let header = |i: usize| shoff + i * shentsize;
    let names_at = u64_at(header(shstrndx) + 0x18)? as usize;
    for i in 0..shnum {
        let start = names_at + u32_at(header(i))? as usize;
        let rest = elf.get(start..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        if &rest[..end] == name {
            return Some(true);
        }
    }
    Some(false)
}

/// The binary's size after `gzip -6`, about what its image layer weighs in a registry.
fn gzip_size(binary: &Path) -> Option<u64> {
    let mut child = Command::new("gzip")
        .args(["-6", "-c"])
        .arg(binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let mut count = 0u64;
    let mut buf = [0u8; 65536];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => count += n as u64,
            Err(_) => return None,
        }
    }
    child.wait().ok()?.success().then_some(count)
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

pub(crate) struct ProcStatus {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn proc_status(pid: u32) -> Result<ProcStatus, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e} (did the service exit?)"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// User + system CPU time the process has used, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, String> {
    cpu_split_seconds(pid).map(|(user, system)| user + system)
}

/// (user, system) CPU time the process has used, in seconds.
pub(crate) fn cpu_split_seconds(pid: u32) -> Result<(f64, f64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    // After it come field 3 (state) onwards, so utime (14) and stime (15) are at 11 and 12.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| format!("unreadable /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(11)? / hz, ticks(12)? / hz))
}

/// The next text frame (other frames are skipped).
pub(crate) fn read_text<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> Result<String, String> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => return Ok(t),
            Ok(_) => {}
            Err(e) => return Err(format!("ceiling: read: {e}")),
        }
    }
}

/// The machine's (busy, total) CPU time so far, in clock ticks, from the first line of
/// `/proc/stat` (idle and iowait count as not busy).
pub(crate) fn machine_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Samples VmRSS every 10 ms on its own thread, as a cross-check of VmHWM.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::SeqCst) {
                if let Ok(s) = proc_status(pid) {
                    peak = peak.max(s.rss_kib);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    pub(crate) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// The timestamping relay.

/// A byte-for-byte TCP relay on 127.0.0.1 in front of the Supabase double. REST and Realtime
/// share one URL, so everything goes through it; while recording, every chunk the double writes
/// on a Realtime socket is kept with the instant it was read, before it is passed on (so the
/// relay's own hop counts against the service). Used only in the latency phases.
pub(crate) struct Relay {
    port: u16,
    shared: Arc<RelayShared>,
}

#[derive(Default)]
struct RelayShared {
    recording: AtomicBool,
    captures: Mutex<Vec<Arc<Mutex<Capture>>>>,
}

/// What the double wrote on one Realtime socket while recording.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    /// (offset in `bytes` where a chunk starts, when it was read).
    chunks: Vec<(usize, Instant)>,
}

impl Relay {
    pub(crate) fn start(upstream: u16) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(RelayShared::default());
        let accept_shared = shared.clone();
        // Detached: the relay lives as long as the bench process.
        std::thread::Builder::new()
            .name("bench-relay".into())
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    relay_connection(client, upstream, accept_shared.clone());
                }
            })?;
        Ok(Relay { port, shared })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn record(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Forget what was recorded, and the sockets that are gone.
    pub(crate) fn clear(&self) {
        let mut captures = lock(&self.shared.captures);
        captures.retain(|c| Arc::strong_count(c) > 1);
        for c in captures.iter() {
            *lock(c) = Capture::default();
        }
    }

    /// For every UUID the double wrote on a Realtime socket, when the chunk completing its first
    /// occurrence was read. The first occurrence of a message id is its change event.
    pub(crate) fn first_seen(&self) -> HashMap<String, Instant> {
        let mut seen = HashMap::new();
        for capture in lock(&self.shared.captures).iter() {
            let c = lock(capture);
            let b = &c.bytes;
            let mut i = 0;
            while i + 36 <= b.len() {
                if is_uuid(&b[i..i + 36]) {
                    let end = i + 35;
                    let chunk = c.chunks.partition_point(|&(start, _)| start <= end);
                    if let (Some(&(_, at)), Ok(id)) = (
                        c.chunks.get(chunk.wrapping_sub(1)),
                        std::str::from_utf8(&b[i..i + 36]),
                    ) {
                        seen.entry(id.to_string()).or_insert(at);
                    }
                    i += 36;
                } else {
                    i += 1;
                }
            }
        }
        seen
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Two pump threads per connection; a connection whose first bytes are a Realtime upgrade
/// request gets a capture that the double→client pump appends to while recording.
fn relay_connection(client: TcpStream, upstream: u16, shared: Arc<RelayShared>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    // Without this, Nagle's algorithm would hold small frames back and add delay of our own.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let capture: Arc<OnceLock<Arc<Mutex<Capture>>>> = Arc::default();
    let up_capture = capture.clone();
    let up_shared = shared.clone();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        let _ = std::thread::Builder::new()
            .name(name.into())
            .stack_size(128 * 1024)
            .spawn(f);
    };
    spawn(
        "relay-up",
        Box::new(move || {
            let mut first = true;
            pump(client, server, |chunk| {
                if std::mem::take(&mut first) && chunk.starts_with(b"GET /realtime/") {
                    let c = Arc::new(Mutex::new(Capture::default()));
                    lock(&up_shared.captures).push(c.clone());
                    let _ = up_capture.set(c);
                }
            })
        }),
    );
    spawn(
        "relay-down",
        Box::new(move || {
            pump(server2, client2, |chunk| {
                if let Some(c) = capture.get() {
                    if shared.recording.load(Ordering::SeqCst) {
                        let at = Instant::now();
                        let mut c = lock(c);
                        let start = c.bytes.len();
                        c.chunks.push((start, at));
                        c.bytes.extend_from_slice(chunk);
                    }
                }
            })
        }),
    );
}

/// Copy `from` → `to`, showing each chunk to `tap` first; pass a half-close on.
fn pump(mut from: TcpStream, mut to: TcpStream, mut tap: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tap(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

// ---------------------------------------------------------------------------------------------
// The machine and the build, for the report.

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap_or_default()
}

/// The 1-minute load average from `/proc/loadavg`.
pub(crate) fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
}

pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or(String::new(), |k| format!(", Linux {}", k.trim()));
    let load = load_average().map_or(String::new(), |l| format!(", load average {l} at the end"));
    format!("{model}, {cores} cores{mem}{kernel}{load}")
}

pub(crate) fn git_revision() -> Option<String> {
    let root = workspace_root();
    let rev = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args([
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(format!(
        "commit {rev}{}",
        if dirty {
            " with uncommitted changes to src/ or Cargo.*"
        } else {
            ""
        }
    ))
}

/// "YYYY-MM-DD HH:MM" in UTC, from the system clock (no date crate in this workspace).
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01, counting in 400-year eras from 0000-03-01 so
    // February, with its leap day, ends each counted year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}
