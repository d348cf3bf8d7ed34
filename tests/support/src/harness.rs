//! The whole local world sms-sender runs in, for tests, `make demo`, `make smoke` and the bench:
//! a [`Stack`] (PostgreSQL with the shipped schema, the Supabase double, the Twilio double, and a
//! database connection to seed and inspect rows) and a [`Service`] (the real binary as a child
//! process with an explicit environment, its log captured to a file).
//!
//! Everything listens on 127.0.0.1 and every wait is bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::pg::{self, Pg};
use crate::supabase::{SupabaseConfig, SupabaseDouble};
use crate::twilio::{TwilioConfig, TwilioDouble};

/// The Twilio number the service sends from in the local world.
pub const FROM_NUMBER: &str = "+15005550006";

/// Every message body inserted through a [`Stack`] in this process. A [`Service`] log must
/// never contain one (bodies are personal data; the service logs them at trace level only).
static BODIES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Bodies shorter than this are not searched for (they occur in ordinary words).
const MIN_SCANNED_BODY: usize = 8;

/// Variables whose values must never appear in a service log, at any level.
pub const SECRET_VARS: &[&str] = &[
    "SUPABASE_SERVICE_KEY",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
];

/// PostgreSQL + doubles + a database connection.
pub struct Stack {
    /// The database (dropped last: fields drop in declaration order, so it is declared last).
    pub supabase: SupabaseDouble,
    /// The Twilio double.
    pub twilio: TwilioDouble,
    db: Mutex<Option<postgres::Client>>,
    /// The database.
    pub pg: Pg,
}

/// A message row as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// `id`.
    pub id: String,
    /// `status`.
    pub status: Option<String>,
    /// `twilio_message_sid`.
    pub twilio_message_sid: Option<String>,
    /// `sent_at`, as text.
    pub sent_at: Option<String>,
}

impl Stack {
    /// Start everything with default configs.
    pub fn start() -> Stack {
        Stack::start_with(SupabaseConfig::default(), TwilioConfig::default())
    }

    /// Start everything with these double configs.
    pub fn start_with(supabase: SupabaseConfig, twilio: TwilioConfig) -> Stack {
        let pg = Pg::start();
        pg.execute_batch(pg::schema_sql());
        let supabase = SupabaseDouble::start(&pg, supabase);
        let twilio = TwilioDouble::start(twilio);
        Stack {
            supabase,
            twilio,
            db: Mutex::new(None),
            pg,
        }
    }

    /// The environment the service needs to run against this stack (no PORT: see [`free_port`]).
    pub fn service_env(&self) -> Vec<(String, String)> {
        let t = self.twilio.config();
        vec![
            ("SUPABASE_URL".into(), self.supabase.url()),
            ("SUPABASE_SERVICE_KEY".into(), self.supabase.service_key()),
            ("TWILIO_ACCOUNT_SID".into(), t.account_sid.clone()),
            ("TWILIO_AUTH_TOKEN".into(), t.auth_token.clone()),
            ("TWILIO_PHONE_NUMBER".into(), FROM_NUMBER.into()),
            ("TWILIO_API_URL".into(), self.twilio.url()),
        ]
    }

    /// [`Stack::service_env`] with `extra` variables added, or replacing those of the same name
    /// (an empty value unsets a variable for the service: it treats empty as unset).
    pub fn service_env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.service_env();
        for (name, value) in extra {
            env.retain(|(key, _)| key != name);
            env.push((name.to_string(), value.to_string()));
        }
        env
    }

    /// Start `binary` against this stack with `extra` variables and wait until it is subscribed
    /// (panics with the service's log if it does not subscribe within 20 s).
    pub fn start_service(&self, binary: &Path, extra: &[(&str, &str)]) -> Service {
        let svc = Service::start(binary, self.service_env_with(extra));
        assert!(
            svc.wait_subscribed(Duration::from_secs(20)),
            "the service did not subscribe; its log:\n{}",
            svc.log()
        );
        svc
    }

    /// Run `f` with the shared database connection, reconnecting (and re-running `f`) when the
    /// connection was lost, e.g. across a PostgreSQL restart.
    pub fn db<T>(
        &self,
        mut f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> T {
        let mut guard = self.db.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..100 {
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = Some(self.pg.client());
            }
            let client = guard.as_mut().expect("connected above");
            match f(client) {
                Ok(v) => return v,
                Err(_) if client.is_closed() => {
                    *guard = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "database call failed: {}",
                    e.as_db_error()
                        .map_or(e.to_string(), |d| d.message().to_string())
                ),
            }
        }
        panic!("the database stayed unreachable")
    }

    /// A new user and conversation with this phone number; returns the conversation id.
    pub fn create_conversation(&self, phone: &str) -> String {
        self.db(|c| {
            let user: String = c
                .query_one("INSERT INTO users DEFAULT VALUES RETURNING id::text", &[])?
                .get(0);
            let row = c.query_one(
                "INSERT INTO conversations (user_id, phone_number) VALUES ($1::text::uuid, $2) RETURNING id::text",
                &[&user, &phone],
            )?;
            Ok(row.get(0))
        })
    }

    /// Insert one outbound `pending` message (the trigger queues it); returns its id.
    pub fn insert_outbound(&self, conversation: &str, body: &str) -> String {
        self.insert_many(conversation, &[body.to_string()])
            .remove(0)
    }

    /// Insert several outbound `pending` messages in one transaction; returns their ids in order.
    pub fn insert_many(&self, conversation: &str, bodies: &[String]) -> Vec<String> {
        self.db(|c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO messages (conversation_id, user_id, role, content, direction, status) \
                 SELECT c.id, c.user_id, 'assistant', $2, 'outbound', 'pending' \
                 FROM conversations c WHERE c.id = $1::text::uuid RETURNING id::text",
            )?;
            let mut ids = Vec::with_capacity(bodies.len());
            BODIES.lock().unwrap_or_else(|e| e.into_inner()).extend(
                bodies
                    .iter()
                    .filter(|b| b.len() >= MIN_SCANNED_BODY)
                    .cloned(),
            );
            for body in bodies {
                ids.push(tx.query_one(&stmt, &[&conversation, body])?.get(0));
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Run arbitrary SQL (seeding odd rows, breaking things on purpose).
    pub fn sql(&self, sql: &str) {
        self.db(|c| c.batch_execute(sql))
    }

    /// One message row.
    pub fn message(&self, id: &str) -> MessageRow {
        self.db(|c| {
            let r = c.query_one(
                "SELECT id::text, status, twilio_message_sid, sent_at::text FROM messages WHERE id = $1::text::uuid",
                &[&id],
            )?;
            Ok(MessageRow { id: r.get(0), status: r.get(1), twilio_message_sid: r.get(2), sent_at: r.get(3) })
        })
    }

    /// How many messages have each status.
    pub fn status_counts(&self) -> BTreeMap<String, i64> {
        self.db(|c| {
            let rows = c.query(
                "SELECT coalesce(status, 'NULL'), count(*) FROM messages GROUP BY 1",
                &[],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Wait until `status_counts()[status] == n` (bounded); returns whether it happened.
    pub fn wait_status_count(&self, status: &str, n: i64, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.status_counts().get(status).copied().unwrap_or(0) == n
        })
    }
}

impl Stack {
    /// Wait until nothing is `pending`, `queued_for_send` or `sending` (bounded).
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let c = self.status_counts();
            !c.contains_key("queued_for_send")
                && !c.contains_key("sending")
                && !c.contains_key("pending")
        })
    }

    /// The promise, checked: every row is `sent` with the SID of the one Twilio message created
    /// for it (matched on the body the service sent, so bodies must be unique per test), or
    /// `failed` with none created and its id named in a log. Panics with the logs otherwise;
    /// returns how many failed.
    pub fn assert_exactly_once(&self, logs: &[&Service]) -> usize {
        let rows: Vec<(String, String, Option<String>, Option<String>)> = self.db(|c| {
            Ok(c.query(
                "SELECT id::text, content, status, twilio_message_sid FROM messages",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
        });
        let all_logs = logs
            .iter()
            .map(|s| s.log())
            .collect::<Vec<_>>()
            .join("\n-----\n");
        let mut created: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in self.twilio.messages() {
            created
                .entry(m.requested_body.clone())
                .or_default()
                .push(m.sid.clone());
        }
        let mut failed = 0;
        for (id, body, status, sid) in &rows {
            let sids = created.get(body).cloned().unwrap_or_default();
            match status.as_deref() {
                Some("sent") => {
                    assert_eq!(
                        sids.len(),
                        1,
                        "{id} ({body}) created {} times at Twilio\n{all_logs}",
                        sids.len()
                    );
                    assert_eq!(
                        sid.as_ref(),
                        sids.first(),
                        "{id} records the SID of its SMS\n{all_logs}"
                    );
                }
                Some("failed") => {
                    assert!(
                        sids.is_empty(),
                        "{id} ({body}) is failed but was created\n{all_logs}"
                    );
                    assert!(
                        all_logs.contains(id.as_str()),
                        "{id} failed without a logged reason"
                    );
                    failed += 1;
                }
                other => panic!(
                    "{id} left {other:?}; counts {:?}\n{all_logs}",
                    self.status_counts()
                ),
            }
        }
        let sent = rows.len() - failed;
        assert_eq!(
            self.twilio.messages().len(),
            sent,
            "Twilio holds exactly one message per sent row\n{all_logs}"
        );
        failed
    }
}

/// The service binary a test runs: `SMS_SENDER_BIN` when set (to show a test failing against
/// another build), else `default` (the test's `CARGO_BIN_EXE_sms-sender`).
pub fn binary_under_test(default: &str) -> PathBuf {
    std::env::var_os("SMS_SENDER_BIN").map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Poll `cond` every 20 ms until true or `timeout`; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on right now (bind :0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The service binary running as a child process.
pub struct Service {
    child: Child,
    /// Health port.
    pub port: u16,
    log_path: PathBuf,
    /// Secret values from its environment, scanned for in its log when it is dropped.
    secrets: Vec<String>,
    /// Whether `RUST_LOG` allowed trace level (the only level where bodies may appear).
    bodies_allowed: bool,
    /// The runner forks the service as its child (signals go to that child).
    runner_forks: bool,
    _dir: TempDir,
}

/// The (one) child process of `parent`, found in `/proc/*/stat` (its fourth field is the parent's
/// pid; `/proc/PID/task/TID/children` is not in every kernel).
fn forked_child(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid …": comm may hold spaces and parentheses; split after the last ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start the service.
pub struct Launch<'a> {
    /// The binary.
    pub binary: &'a Path,
    /// The complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory (default: a fresh temp dir).
    pub cwd: Option<&'a Path>,
    /// Run as this uid/gid (root only).
    pub uid_gid: Option<(u32, u32)>,
    /// A command the binary is run through, binary and arguments appended: an emulator
    /// (`qemu-aarch64-static`), or a script that sets up a container-like root. Empty: none.
    pub runner: Vec<String>,
    /// The runner forks (`unshare --fork`): the service is its child, and signals go there.
    pub runner_forks: bool,
}

impl Service {
    /// Start the binary with `env` plus `PORT` (a free port) and `RUST_LOG=info` unless given.
    pub fn start(binary: &Path, env: Vec<(String, String)>) -> Service {
        Service::launch(Launch {
            binary,
            env,
            cwd: None,
            uid_gid: None,
            runner: Vec::new(),
            runner_forks: false,
        })
    }

    /// Start with full control over the process.
    pub fn launch(l: Launch<'_>) -> Service {
        let dir = TempDir::new("sms-sender-svc");
        let log_path = dir.0.join("service.log");
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut env = l.env;
        let port = match env.iter().find(|(k, _)| k == "PORT") {
            Some((_, p)) => p.parse().expect("PORT is a number"),
            None => {
                let p = free_port();
                env.push(("PORT".into(), p.to_string()));
                p
            }
        };
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        let secrets = env
            .iter()
            .filter(|(k, v)| SECRET_VARS.contains(&k.as_str()) && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        let bodies_allowed = env
            .iter()
            .any(|(k, v)| k == "RUST_LOG" && v.contains("trace"));
        let mut cmd = match l.runner.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(l.binary);
                cmd
            }
            None => Command::new(l.binary),
        };
        cmd.env_clear()
            .envs(env)
            .current_dir(l.cwd.unwrap_or(&dir.0))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if let Some((uid, gid)) = l.uid_gid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", l.binary.display()));
        Service {
            child,
            port,
            log_path,
            secrets,
            bodies_allowed,
            runner_forks: l.runner_forks,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on the health port: status and body, or `None` if it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// The parsed `/health` answer.
    pub fn health(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.get("/health")?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// Wait until `/health` says `websocket: connected` (subscribed).
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.health()
                .is_some_and(|(_, v)| v["websocket"] == "connected")
        })
    }

    /// Send a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = self.service_pid();
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }

    /// The service's own process: the child, or the runner's child when the runner forks.
    pub fn service_pid(&self) -> u32 {
        let runner = self.child.id();
        if self.runner_forks {
            forked_child(runner).unwrap_or(runner)
        } else {
            runner
        }
    }

    /// Send SIGTERM, as Cloud Run does before stopping an instance.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Wait for the process to exit (bounded).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill at once (SIGKILL) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Panic if the log holds a secret of this service's environment, or (below trace level) a
    /// message body inserted by any [`Stack`] of this process. Runs on drop, so every test that
    /// starts a service is checked.
    pub fn assert_log_clean(&self) {
        let log = self.log();
        for secret in &self.secrets {
            assert!(
                !log.contains(secret.as_str()),
                "a secret value leaked into the service log:\n{log}"
            );
        }
        if !self.bodies_allowed {
            let bodies = BODIES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(body) = bodies.iter().find(|b| log.contains(b.as_str())) {
                panic!("message body {body:?} leaked into the service log:\n{log}");
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        if !std::thread::panicking() {
            self.assert_log_clean();
        }
    }
}

/// A minimal HTTP/1.1 GET on 127.0.0.1:port (bounded to 2 s).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

impl Stack {
    /// Start `binary` with delivery receipts on (every create's `StatusCallback` names its row:
    /// `…/twilio/status?sms_sender_message=<id>`), its port chosen here; returns the service, its
    /// port and its `STATUS_CALLBACK_URL`.
    pub fn start_service_with_receipts(
        &self,
        binary: &Path,
        extra: &[(&str, &str)],
    ) -> (Service, u16, String) {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/twilio/status");
        let port_text = port.to_string();
        let mut all = vec![
            ("PORT", port_text.as_str()),
            ("STATUS_CALLBACK_URL", url.as_str()),
        ];
        all.extend_from_slice(extra);
        (self.start_service(binary, &all), port, url)
    }

    /// Wait up to `timeout` for row `id` to have `status`; whether it did.
    pub fn wait_message_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.message(id).status.as_deref() == Some(status)
        })
    }

    /// How many `messages` rows satisfy `condition`, an SQL boolean expression over the table's
    /// columns (e.g. `status = 'sending' AND sent_at <= now()`).
    pub fn count_messages(&self, condition: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM messages WHERE {condition}");
        self.db(|c| Ok(c.query_one(sql.as_str(), &[])?.get(0)))
    }
}

impl Service {
    /// One sample of `/metrics`: `sample` is the metric name for an unlabelled metric, or the
    /// name with its labels exactly as the page prints them (`name{label="value"}`). `None` when
    /// the page does not answer or has no such sample.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (status, text) = self.get("/metrics")?;
        if status != 200 {
            return None;
        }
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name.trim() == sample).then(|| value.trim().parse().ok())?
        })
    }
}

/// How a [`RefusingServer`] words its refusal of `<target>` (path and query, as requested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Cannot GET <target>` as plain text.
    Text,
    /// Express's default 404 page: `<pre>Cannot GET <target></pre>` in an HTML document, the
    /// target HTML-escaped (`&` → `&amp;`).
    Html,
    /// `{"message":"Cannot GET <target>"}`.
    Json,
}

/// A server that answers every request with one status and a body quoting the request's method
/// and target, as a proxy or a wrong `SUPABASE_URL` does (the Realtime upgrade's target carries
/// `?apikey=<key>`). Records each target it was asked for.
pub struct RefusingServer {
    server: crate::http::HttpServer,
    targets: std::sync::Arc<Mutex<Vec<String>>>,
}

struct Refuser {
    status: u16,
    refusal: Refusal,
    targets: std::sync::Arc<Mutex<Vec<String>>>,
}

impl crate::http::Handler for Refuser {
    fn handle(&self, req: crate::http::Request, _stream: &TcpStream) -> crate::http::Reply {
        use crate::http::{Reply, Response};
        let target = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(target.clone());
        let said = format!("Cannot {} {target}", req.method);
        let response = match self.refusal {
            Refusal::Text => Response::new(self.status)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(said),
            Refusal::Html => Response::new(self.status)
                .header("Content-Type", "text/html; charset=utf-8")
                .body(format!(
                    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
                     <title>Error</title>\n</head>\n<body>\n<pre>{}</pre>\n</body>\n</html>\n",
                    said.replace('&', "&amp;")
                        .replace('<', "&lt;")
                        .replace('>', "&gt;")
                )),
            Refusal::Json => Response::json(self.status, &serde_json::json!({ "message": said })),
        };
        Reply::Respond(response)
    }
}

impl RefusingServer {
    /// Start on a free 127.0.0.1 port.
    pub fn start(status: u16, refusal: Refusal) -> RefusingServer {
        let targets = std::sync::Arc::new(Mutex::new(Vec::new()));
        let handler = std::sync::Arc::new(Refuser {
            status,
            refusal,
            targets: targets.clone(),
        });
        let server = crate::http::HttpServer::start(0, handler).expect("start the refusing server");
        RefusingServer { server, targets }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request target refused so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Stack {
    /// Insert outbound `pending` messages with the given ids (canonical UUID text) in one
    /// transaction, e.g. to place rows in chosen scaled-mode partitions (a row's partition is its
    /// id's last byte modulo the partition count).
    pub fn insert_with_ids(&self, conversation: &str, rows: &[(String, String)]) {
        BODIES.lock().unwrap_or_else(|e| e.into_inner()).extend(
            rows.iter()
                .map(|(_, body)| body)
                .filter(|b| b.len() >= MIN_SCANNED_BODY)
                .cloned(),
        );
        self.db(|c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO messages (id, conversation_id, user_id, role, content, direction, status) \
                 SELECT $1::text::uuid, c.id, c.user_id, 'assistant', $3, 'outbound', 'pending' \
                 FROM conversations c WHERE c.id = $2::text::uuid",
            )?;
            for (id, body) in rows {
                tx.execute(&stmt, &[id, &conversation, body])?;
            }
            tx.commit()
        })
    }
}

/// A byte-for-byte TCP relay on 127.0.0.1 in front of a server (the Supabase double), one per
/// service, so that the REST requests of several services on one double can be told apart: it
/// records the request line (`GET /rest/v1/messages?…`) of every REST request its client sends.
/// WebSocket frames pass through untouched (a client's frames are masked, so they never read
/// as a request line). Stops accepting when dropped; open connections end with their peers.
pub struct RestTap {
    port: u16,
    lines: std::sync::Arc<Mutex<Vec<String>>>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RestTap {
    /// Start a relay to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> RestTap {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the tap");
        let port = listener.local_addr().expect("tap address").port();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stopping.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let l = l.clone();
                std::thread::spawn(move || tap_pump(client, server, Some(l)));
                std::thread::spawn(move || tap_pump(s2, c2, None));
            }
        });
        RestTap {
            port,
            lines,
            stopping,
        }
    }

    /// `http://127.0.0.1:PORT`, to give the service as `SUPABASE_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines recorded so far (`METHOD /rest/v1/… HTTP/1.1`), in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget the recorded lines.
    pub fn clear(&self) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for RestTap {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to` until either ends; with `lines`, record every REST request line seen.
fn tap_pump(
    mut from: TcpStream,
    mut to: TcpStream,
    lines: Option<std::sync::Arc<Mutex<Vec<String>>>>,
) {
    const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "HEAD"];
    let mut buf = [0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let Some(lines) = &lines else { continue };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 2);
            // A request line may follow the previous request's body on the same "line".
            if let Some(at) = METHODS
                .iter()
                .filter_map(|m| line.find(&format!("{m} /rest/v1/")))
                .min()
            {
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line[at..].to_string());
            }
        }
        // Bounded: a long stretch without a line end (WebSocket frames) is not request text.
        if pending.len() > 64 * 1024 {
            let cut = pending.len() - 8 * 1024;
            pending.drain(..cut);
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Service {
    /// Freeze the process (SIGSTOP) without closing anything: its sockets stay open and silent,
    /// as a hung host's do. [`Service::kill`] still ends it.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }
}
