//! A throwaway PostgreSQL cluster per test, started from the system's PostgreSQL binaries.
//!
//! What this module owns:
//! - finding the binaries (`PG_BIN`, else the highest `/usr/lib/postgresql/*/bin`, else
//!   `pg_config --bindir`);
//! - one *template* cluster (initdb + `CREATE DATABASE sms`), built once and then copied for every
//!   [`Pg`], because initdb takes seconds and a file copy takes milliseconds. The template lives in
//!   the temp dir under a name keyed by the binaries and the run-as user, so several test processes
//!   share it; it is built in a private staging dir and published with an atomic `rename`, so a
//!   reader never sees a half-built template;
//! - starting `postgres` as a direct child on a free 127.0.0.1 port with its unix socket inside the
//!   instance's own temp dir, and killing it and deleting the dir when the [`Pg`] is dropped.
//!
//! Invariants:
//! - PostgreSQL refuses to run as root. Under root, initdb and postgres run as the `postgres` user
//!   (or `nobody` if there is none), and every dir they touch is chowned to that user.
//! - Every server is spawned from ONE long-lived helper thread per process. The children get
//!   `PR_SET_PDEATHSIG(SIGKILL)` so a test binary that is killed does not leave servers behind; the
//!   kernel sends that signal when the *thread* that forked the child exits, not the process, so
//!   spawning from short-lived test threads would kill the server as soon as the test thread
//!   that created it ended. The helper thread never exits.
//! - The server's default TimeZone is UTC, so every session (tests, the doubles, triggers) renders
//!   `timestamptz` as `…+00:00`, like Supabase.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a start may take before we give up and show the server log.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The database and role every instance provides.
const DB: &str = "sms";
/// Bumped when the template's initdb flags change, so stale cached templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// The schema sms-sender expects (`sql/schema.sql`).
pub fn schema_sql() -> &'static str {
    include_str!("../../../sql/schema.sql")
}

/// Supabase Realtime's objects in a project database (`realtime.messages`, `realtime.send`),
/// for a test that needs them without a Supabase double (a double installs them itself).
pub fn realtime_schema_sql() -> &'static str {
    include_str!("supabase/realtime/realtime_schema.sql")
}

/// Where the binaries are and which user runs them (resolved once per process).
struct PgEnv {
    bin: PathBuf,
    /// `Some((uid, gid))` when we are root and must drop privileges for initdb/postgres.
    run_as: Option<(u32, u32)>,
}

fn pg_env() -> &'static PgEnv {
    static ENV: OnceLock<PgEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: set PG_BIN to the directory holding `initdb` \
                 and `postgres`, or install them (`apt-get install postgresql`)"
            )
        });
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            Some(
                lookup_user("postgres")
                    .or_else(|| lookup_user("nobody"))
                    .expect("running as root, but neither a `postgres` nor a `nobody` user exists"),
            )
        } else {
            None
        };
        PgEnv { bin, run_as }
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Some(dir);
        }
        panic!(
            "PG_BIN={} does not contain initdb and postgres",
            dir.display()
        );
    }
    // Highest numeric version under the Debian layout.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    has_server(&dir).then_some(dir)
}

/// uid/gid of a user, via the reentrant getpwnam_r (other threads may use the passwd API too).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; zeroed is a valid (if meaningless) value for it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `buf` is writable
    // for `buf.len()` bytes, and `pwd`/`result` are live locals. The ids are copied out before
    // `buf` (which the strings in `pwd` point into) is dropped.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

// ---------------------------------------------------------------------------------------------
// Spawning from one long-lived thread (see the module doc: PR_SET_PDEATHSIG is per thread).

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and thread) lasts as long as the
                // process: exactly what PR_SET_PDEATHSIG needs.
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("spawn the pg-spawner thread");
        Mutex::new(tx)
    })
}

/// Spawn `cmd` from the helper thread, as the run-as user, with a parent-death signal.
fn spawn_child(mut cmd: Command) -> std::io::Result<Child> {
    let env = pg_env();
    if let Some((uid, gid)) = env.run_as {
        cmd.uid(uid).gid(gid);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe prctl/getppid. std applies setuid/setgid *before* pre_exec closures,
    // which matters because a credential change clears the parent-death signal.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody will ever kill us.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited during spawn"));
                }
            }
            let _ = parent;
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnRequest {
            cmd,
            reply: reply_tx,
        })
        .map_err(|_| std::io::Error::other("pg-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("pg-spawner thread dropped the request"))?
}

// ---------------------------------------------------------------------------------------------
// Dirs and files.

fn unique_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{n}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ))
}

/// Create a dir with `mode`, owned by the run-as user (so postgres can write into it).
fn make_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    give_to_run_user(path);
}

fn give_to_run_user(path: &Path) {
    if let Some((uid, gid)) = pg_env().run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Copy a data dir tree, keeping modes and handing every entry to the run-as user. Runtime files
/// of a previous server (pid file, options) are skipped.
fn copy_tree(from: &Path, to: &Path) {
    let meta = fs::metadata(from).unwrap_or_else(|e| panic!("stat {}: {e}", from.display()));
    make_dir(to, meta.permissions().mode() & 0o7777);
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("read dir entry");
        let name = entry.file_name();
        if name == "postmaster.pid" || name == "postmaster.opts" {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let ft = entry.file_type().expect("file type");
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).expect("read link");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
        } else {
            // fs::copy keeps the permission bits.
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
            give_to_run_user(&dst);
        }
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    // The tail is what explains a failure.
    if s.len() > 8000 {
        let cut = s.len() - 8000;
        let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        s = format!("…{}", &s[cut..]);
    }
    s
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

// ---------------------------------------------------------------------------------------------
// Server processes.

/// Start `postgres` on `data`, logging to `log`; does not wait for readiness.
fn spawn_postgres(data: &Path, sock: &Path, port: u16, log: &Path, cwd: &Path) -> Child {
    let env = pg_env();
    let logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let logf2 = logf.try_clone().expect("dup log fd");
    let mut cmd = Command::new(env.bin.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            &port.to_string(),
            "-k",
        ])
        .arg(sock)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "TimeZone=UTC",
            "-c",
            "log_timezone=UTC",
            "-c",
            "logging_collector=off",
        ])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2);
    spawn_child(cmd).unwrap_or_else(|e| panic!("spawn {}: {e}", env.bin.join("postgres").display()))
}

/// Connect as `sms` to `dbname`, with a short connect timeout.
fn connect(port: u16, dbname: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user={DB} dbname={dbname} connect_timeout=2"),
        postgres::NoTls,
    )
}

enum ReadyError {
    /// The server process exited (e.g. the port was taken).
    Exited(String),
    TimedOut,
}

/// Wait until the server accepts connections to `dbname`, or it exits, or the time is up.
fn wait_ready(child: &mut Child, port: u16, dbname: &str) -> Result<(), ReadyError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ReadyError::Exited(status.to_string()));
        }
        if let Ok(mut c) = connect(port, dbname) {
            if c.simple_query("SELECT 1").is_ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(ReadyError::TimedOut);
        }
        thread::sleep(Duration::from_millis(30));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we still own and have not reaped, so the pid cannot
    // have been recycled for another process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Send `sig`, wait up to `grace`, then SIGKILL; always reaps the child.
fn terminate(mut child: Child, sig: libc::c_int, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(&child, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The template cluster for this process (built, or reused from an earlier process).
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        sweep_stale_dirs();
        build_template()
    })
}

/// Remove instance and staging dirs left by test processes that were killed before their `Pg`s
/// were dropped (their servers died with them, see PR_SET_PDEATHSIG). A dir is stale when the pid
/// in its name is no longer running; a recycled pid only delays the cleanup.
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix("sms-doubles-pg-template-staging-")
            .or_else(|| name.strip_prefix("sms-doubles-pg-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue; // e.g. the shared template
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn build_template() -> PathBuf {
    let env = pg_env();
    // Key the shared template by binaries and owner: a template from other binaries or owned by
    // another user would not start.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in env.bin.to_string_lossy().bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let uid = env
        .run_as
        .map(|(u, _)| u)
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| unsafe { libc::getuid() });
    let published = std::env::temp_dir().join(format!(
        "sms-doubles-pg-template-v{TEMPLATE_VERSION}-{hash:016x}-u{uid}"
    ));
    let ready_marker = |d: &Path| d.join("template-ready").is_file();
    if ready_marker(&published) {
        return published;
    }

    let staging = unique_dir("sms-doubles-pg-template-staging");
    make_dir(&staging, 0o755);
    let data = staging.join("data");
    let sock = staging.join("sock");
    make_dir(&sock, 0o755);
    let log = staging.join("initdb.log");
    let logf = fs::File::create(&log).expect("create initdb log");
    let mut cmd = Command::new(env.bin.join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args([
            "-U",
            DB,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            // 1 MB WAL segments keep the per-test copy small.
            "--wal-segsize=1",
        ])
        .current_dir(&staging)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("dup"))
        .stderr(logf);
    let status = spawn_child(cmd)
        .and_then(|mut c| c.wait())
        .unwrap_or_else(|e| panic!("run initdb: {e}"));
    if !status.success() {
        panic!("initdb failed ({status}):\n{}", read_log(&log));
    }

    // Start once to create the `sms` database, then shut down cleanly so copies start without
    // crash recovery.
    let server_log = staging.join("server.log");
    let port = free_port();
    let mut child = spawn_postgres(&data, &sock, port, &server_log, &staging);
    if wait_ready(&mut child, port, "postgres").is_err() {
        terminate(child, libc::SIGKILL, Duration::from_secs(1));
        panic!(
            "template PostgreSQL did not start:\n{}",
            read_log(&server_log)
        );
    }
    connect(port, "postgres")
        .and_then(|mut c| c.batch_execute(&format!("CREATE DATABASE {DB}")))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {DB}: {e}"));
    terminate(child, libc::SIGINT, STOP_TIMEOUT);
    fs::write(staging.join("template-ready"), b"ok").expect("write template marker");

    // Publish atomically. Losing the race to another process is fine: its template is equivalent.
    match fs::rename(&staging, &published) {
        Ok(()) => published,
        Err(_) if ready_marker(&published) => {
            let _ = fs::remove_dir_all(&staging);
            published
        }
        Err(_) => {
            // A broken leftover without the marker: replace it.
            let _ = fs::remove_dir_all(&published);
            if fs::rename(&staging, &published).is_ok() || ready_marker(&published) {
                let _ = fs::remove_dir_all(&staging);
                published
            } else {
                // Fall back to using our private staging copy for this process.
                staging
            }
        }
    }
}

/// One throwaway PostgreSQL cluster. The server is stopped and its files deleted on drop.
///
/// `Pg` is `Send + Sync`: tests may share it between threads (e.g. behind an `Arc`).
pub struct Pg {
    dir: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Pg {
    /// Copy the template cluster (initdb runs once per machine and user, not per test) and start
    /// `postgres` as a direct child on a free 127.0.0.1 port, with its unix socket in the
    /// instance's temp dir. Returns once the server accepts connections; panics with the server
    /// log if it does not within 20 s.
    pub fn start() -> Pg {
        let template = template();
        let dir = unique_dir("sms-doubles-pg");
        make_dir(&dir, 0o755);
        let data = dir.join("data");
        copy_tree(&template.join("data"), &data);
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("chmod data");
        let sock = dir.join("sock");
        make_dir(&sock, 0o755);
        let log = dir.join("server.log");
        // A free port can be taken by someone else before postgres binds it: retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_postgres(&data, &sock, port, &log, &dir);
            match wait_ready(&mut child, port, DB) {
                Ok(()) => {
                    return Pg {
                        dir,
                        data,
                        sock,
                        log,
                        port,
                        child: Mutex::new(Some(child)),
                    }
                }
                Err(ReadyError::Exited(status)) => {
                    let _ = child.wait();
                    last_err = format!("postgres exited ({status})");
                }
                Err(ReadyError::TimedOut) => {
                    terminate(child, libc::SIGKILL, Duration::from_secs(1));
                    last_err = format!("postgres not ready within {START_TIMEOUT:?}");
                    break;
                }
            }
        }
        let log_text = read_log(&log);
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start PostgreSQL: {last_err}\n--- server log ---\n{log_text}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for the `postgres` crate.
    pub fn conn_str(&self) -> String {
        format!("host=127.0.0.1 port={} user={DB} dbname={DB}", self.port)
    }

    /// A new connection. Retries for up to 10 s, so it also works right after
    /// [`start_again`](Self::start_again).
    pub fn client(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(self.port, DB) {
                Ok(c) => return c,
                Err(e) if Instant::now() >= deadline => {
                    panic!("connect to PostgreSQL on port {}: {e}", self.port)
                }
                Err(_) => thread::sleep(Duration::from_millis(30)),
            }
        }
    }

    /// Run a batch of SQL statements (e.g. [`schema_sql`]); panics with the database's error.
    pub fn execute_batch(&self, sql: &str) {
        if let Err(e) = self.client().batch_execute(sql) {
            match e.as_db_error() {
                Some(db) => panic!(
                    "SQL batch failed: {} {}: {} (detail: {:?}, where: {:?})",
                    db.severity(),
                    db.code().code(),
                    db.message(),
                    db.detail(),
                    db.where_()
                ),
                None => panic!("SQL batch failed: {e}"),
            }
        }
    }

    /// Fast shutdown, then start again on the same port and data.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Fast shutdown (SIGINT: open sessions are terminated, data is kept). Idempotent.
    pub fn stop(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(child) = child {
            terminate(child, libc::SIGINT, STOP_TIMEOUT);
        }
    }

    /// Start the server again after [`stop`](Self::stop), on the same port and data; waits until
    /// it accepts connections. Does nothing if it is running.
    pub fn start_again(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            return;
        }
        // The port was ours a moment ago; postgres sets SO_REUSEADDR, so TIME_WAIT is no obstacle.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut child = spawn_postgres(&self.data, &self.sock, self.port, &self.log, &self.dir);
            match wait_ready(&mut child, self.port, DB) {
                Ok(()) => {
                    *guard = Some(child);
                    return;
                }
                Err(ReadyError::Exited(_)) if Instant::now() < deadline => {
                    let _ = child.wait();
                    thread::sleep(Duration::from_millis(100));
                }
                Err(_) => {
                    terminate(child, libc::SIGKILL, Duration::from_secs(1));
                    panic!(
                        "PostgreSQL did not start again on port {}:\n{}",
                        self.port,
                        read_log(&self.log)
                    );
                }
            }
        }
    }

    /// The server log so far (for diagnostics in failing tests).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(child) = child {
            // Immediate shutdown (SIGQUIT) rather than SIGTERM: SIGTERM is PostgreSQL's "smart"
            // shutdown, which waits for every client to disconnect, and the data is about to be
            // deleted anyway. SIGKILL if it does not go within 5 s.
            terminate(child, libc::SIGQUIT, Duration::from_secs(5));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let t = Instant::now();
        let pg = Pg::start();
        eprintln!("Pg::start took {:?}", t.elapsed());
        let mut c = pg.client();
        let row = c
            .query_one(
                "SELECT current_user::text, current_database()::text, current_setting('TimeZone')",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "sms");
        assert_eq!(row.get::<_, String>(1), "sms");
        assert_eq!(row.get::<_, String>(2), "UTC");
        // Under root the server must not run as root.
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            !uid_line.split_whitespace().nth(1).unwrap().eq("0"),
            "{uid_line}"
        );
        pg.execute_batch(schema_sql());
        let n: i64 = c
            .query_one("SELECT count(*) FROM messages", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        let dir = pg.dir.clone();
        drop(c);
        drop(pg);
        assert!(!dir.exists(), "instance dir removed on drop");
    }

    #[test]
    fn restarts_on_same_port_and_keeps_data() {
        let pg = Pg::start();
        let port = pg.port();
        pg.execute_batch("CREATE TABLE t (x int); INSERT INTO t VALUES (42);");
        let mut before = pg.client();
        let t = Instant::now();
        pg.restart();
        eprintln!("restart took {:?}", t.elapsed());
        assert_eq!(pg.port(), port);
        assert!(
            before.simple_query("SELECT 1").is_err(),
            "old session was terminated"
        );
        let x: i32 = pg
            .client()
            .query_one("SELECT x FROM t", &[])
            .unwrap()
            .get(0);
        assert_eq!(x, 42);
        pg.stop();
        assert!(connect(port, DB).is_err(), "down while stopped");
        pg.start_again();
        assert!(connect(port, DB).is_ok());
    }

    #[test]
    fn parallel_instances_are_independent() {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                thread::spawn(move || {
                    let pg = Pg::start();
                    pg.execute_batch(&format!("CREATE TABLE t AS SELECT {i} AS v"));
                    let v: i32 = pg
                        .client()
                        .query_one("SELECT v FROM t", &[])
                        .unwrap()
                        .get(0);
                    (pg.port(), v)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (i, (_, v)) in results.iter().enumerate() {
            assert_eq!(*v, i as i32);
        }
    }

    #[test]
    fn survives_the_exit_of_the_thread_that_started_it() {
        // PR_SET_PDEATHSIG fires when the forking *thread* exits: the helper thread must be the
        // one forking, or this server would be killed as soon as the short-lived thread ends.
        let pg = thread::spawn(Pg::start).join().unwrap();
        thread::sleep(Duration::from_millis(300));
        let one: i32 = pg.client().query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        fn is_send_sync<T: Send + Sync>(_: &T) {}
        is_send_sync(&pg);
    }
}
