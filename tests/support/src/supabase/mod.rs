//! The Supabase double: a PostgREST subset at `/rest/v1/<table>` and the Realtime Phoenix
//! WebSocket at `/realtime/v1/websocket`, on one 127.0.0.1 port like a real project URL, both backed
//! by a real PostgreSQL ([`crate::pg::Pg`]). § numbers in comments under this folder refer to
//! `docs/supabase.md`.
//!
//! # Layout
//! - this file: the public API ([`SupabaseDouble`], [`SupabaseConfig`], [`RestFault`],
//!   [`SubscribeMode`], observations and fault switches) and the router between REST and Realtime;
//! - `jwt`: the test keys ([`test_service_jwt`], [`make_test_jwt`]) and the unverified claim
//!   checks shared by REST and Realtime;
//! - `pool`: the connection pool (sessions in UTC, the service role's statement timeout);
//! - `schema`: the schema cache (columns, keys, foreign keys read from PostgreSQL's catalogs) and
//!   identifier quoting;
//! - `postgrest`: the REST answers — recording and faults ([`RestRule`], [`RestRecord`]), key
//!   checks, query grammar, SQL, statements and rendering (JSON built inside PostgreSQL so values
//!   look exactly like PostgREST's), one file each;
//! - `realtime`: Phoenix V1/V2 — upgrade, socket threads and wire frames, channels, bindings and
//!   filters, the change feed (a row trigger reporting through LISTEN/NOTIFY) and socket faults,
//!   one file each;
//! - `counters`: traffic counters (Realtime frames by event, REST requests by kind);
//! - `testkit` (tests only): a database with the sms-sender schema, a double on it, an HTTP and a
//!   WebSocket client for the double's own tests.
//!
//! Starting a double installs, in the database it is given, a schema `sms_double` (notify
//! functions, sequence), a row trigger `"00_sms_double_changes"` on every table in `public`, the
//! project's `realtime` schema (`realtime.messages`, `realtime.send`, as Realtime's tenant
//! migrations create them) and a trigger `"00_sms_double_broadcasts"` on `realtime.messages`.
//!
//! Invariants:
//! - every SQL identifier comes from the schema cache (i.e. from PostgreSQL's catalogs) and is
//!   quoted; every client-supplied value is a bind parameter;
//! - every pooled session runs with `TimeZone=UTC`, like Supabase;
//! - the contract followed is `docs/supabase.md` (§ numbers in comments refer to it).

mod counters;
mod jwt;
mod pool;
mod postgrest;
mod realtime;
mod schema;
#[cfg(test)]
mod testkit;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{Handler, HttpServer, Reply, Request, Response};
use crate::pg::Pg;

pub use counters::{RestKind, SupabaseCounters, BILLED_SENT_EVENTS};
pub(crate) use jwt::{jwt_claims, jwt_role, looks_like_jwt, JwtProblem};
pub use jwt::{make_test_jwt, test_service_jwt};
pub(crate) use pool::{Pool, PoolError};
pub use postgrest::{RestRecord, RestRule};

/// How the double is configured at start (faults are switched at run time instead).
#[derive(Debug, Clone)]
pub struct SupabaseConfig {
    /// The key the double accepts as `apikey` (a legacy service_role JWT "eyJ…" or an
    /// "sb_secret_…" key).
    pub service_key: String,
    /// Delay before pushing the "Subscribed to PostgreSQL" system message after a join ok.
    pub subscribe_delay: Duration,
    /// Close a socket after this long without any inbound frame (real server: 60 s).
    pub idle_timeout: Duration,
}

impl Default for SupabaseConfig {
    fn default() -> Self {
        SupabaseConfig {
            service_key: test_service_jwt(),
            subscribe_delay: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A REST fault to inject (see [`SupabaseDouble::rest_fail_next`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RestFault {
    /// Answer with this status and a PostgREST error body `{code, details:null, hint:null, message}`.
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// Answer with this status and an HTML body (an edge proxy's error page).
    NonJson { status: u16 },
    /// Read the request, then close the connection without answering or applying it.
    Hangup,
    /// Apply the request's effect (e.g. the PATCH), then close without answering.
    HangupAfterApply,
}

impl RestFault {
    /// 503 `PGRST001`, what PostgREST answers while its database is unreachable.
    pub fn db_unavailable() -> RestFault {
        RestFault::Status {
            status: 503,
            code: "PGRST001".into(),
            message: "Database client error. Retrying the connection.".into(),
        }
    }
}

/// What happens after an ok join reply (§3.4).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SubscribeMode {
    /// Push "Subscribed to PostgreSQL" after the subscribe delay; events flow from then on.
    #[default]
    Ok,
    /// Push a `system` `status:"error"` with this message instead; no events follow.
    Error(String),
    /// Never push the system message (and never deliver events).
    Never,
    /// Push the ok message, then the same message again one subscribe delay later.
    Twice,
}

/// A Presence fault (see [`SupabaseDouble::set_presence_fault`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceFault {
    /// Presence does nothing: `presence` events get no reply and change nothing, and no
    /// `presence_state` follows a join (a tracker that is not replicating).
    Ignore,
    /// `track` is answered `phx_reply` `status:"error"` `{}` and not applied (the server's
    /// `UnableToTrackPresence`); `untrack` still works.
    TrackError,
    /// The tenant's presence rate limit is exceeded: a join with presence enabled, and any
    /// `presence` event, end the channel with `system` "Too many presence messages per second"
    /// and `phx_close`.
    RateLimited,
}

/// One open Realtime socket (see [`SupabaseDouble::realtime_sockets`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeSocket {
    /// The double's number for the socket.
    pub id: u64,
    /// Joined topics (`realtime:…`), sorted.
    pub topics: Vec<String>,
    /// Presence keys its channels track.
    pub presence_keys: Vec<String>,
    /// Black-holed by [`SupabaseDouble::realtime_vanish`], waiting for the idle timeout.
    pub vanished: bool,
}

/// The running double. Stops (and cuts every connection) when dropped.
pub struct SupabaseDouble {
    shared: Arc<Shared>,
    server: HttpServer,
}

/// State shared by the HTTP handler, the socket threads and the change listener.
pub(crate) struct Shared {
    pub(crate) config: SupabaseConfig,
    pub(crate) conn_str: String,
    pub(crate) pool: Pool,
    pub(crate) schema: schema::SchemaCache,
    pub(crate) rest: postgrest::RestState,
    pub(crate) rt: realtime::RealtimeState,
    pub(crate) counters: counters::Counters,
    pub(crate) stopping: AtomicBool,
}

impl SupabaseDouble {
    /// Start on 127.0.0.1 on a free port. Panics if PostgreSQL cannot be set up.
    pub fn start(pg: &Pg, config: SupabaseConfig) -> SupabaseDouble {
        SupabaseDouble::start_on(pg, 0, config).expect("start the Supabase double")
    }

    /// Start on 127.0.0.1:`port` (0 = any). Installs the change trigger (idempotent) on every
    /// table in `public`, starts the LISTEN thread and the HTTP server.
    pub fn start_on(pg: &Pg, port: u16, config: SupabaseConfig) -> std::io::Result<SupabaseDouble> {
        let conn_str = pg.conn_str();
        let shared = Arc::new(Shared {
            config,
            pool: Pool::new(&conn_str),
            conn_str,
            schema: schema::SchemaCache::default(),
            rest: postgrest::RestState::default(),
            rt: realtime::RealtimeState::default(),
            counters: counters::Counters::default(),
            stopping: AtomicBool::new(false),
        });
        {
            let mut client = shared
                .pool
                .get()
                .map_err(|e| std::io::Error::other(format!("connect to PostgreSQL: {e}")))?;
            realtime::install_change_triggers(&mut client, &shared)
                .map_err(|e| std::io::Error::other(format!("install change triggers: {e}")))?;
            realtime::install_broadcast(&mut client)
                .map_err(|e| std::io::Error::other(format!("install the realtime schema: {e}")))?;
        }
        realtime::start_listener(shared.clone());
        // Like the real server's replication connection, the feed is up before clients come:
        // a change or broadcast committed after `start` returns is not lost to a race.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shared.rt.listening.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let server = HttpServer::start(port, Arc::new(Router(shared.clone())))?;
        Ok(SupabaseDouble { shared, server })
    }

    /// `http://127.0.0.1:PORT`: REST at `/rest/v1`, Realtime at `/realtime/v1/websocket`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The port the double listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// The key the double accepts.
    pub fn service_key(&self) -> String {
        self.shared.config.service_key.clone()
    }

    // ---- observation -------------------------------------------------------------------

    /// Every REST request so far, in arrival order (`status` None = hung up / still running).
    pub fn rest_requests(&self) -> Vec<RestRecord> {
        self.shared.rest.records.lock().unwrap().clone()
    }

    /// Forget the recorded REST requests (long runs, e.g. a benchmark, record a lot).
    pub fn clear_rest_requests(&self) {
        self.shared.rest.records.lock().unwrap().clear();
    }

    /// WebSocket upgrades accepted so far.
    pub fn realtime_connections(&self) -> u64 {
        self.shared.rt.connections.load(Ordering::SeqCst)
    }

    /// Sockets open right now.
    pub fn realtime_open_sockets(&self) -> usize {
        self.shared.rt.conns.lock().unwrap().len()
    }

    /// Successful `phx_join` replies sent so far.
    pub fn realtime_joins(&self) -> u64 {
        self.shared.rt.joins.load(Ordering::SeqCst)
    }

    /// Channels currently live (they got "Subscribed to PostgreSQL" and are still joined).
    pub fn subscribed_channels(&self) -> usize {
        self.shared.rt.live_channels()
    }

    /// Every inbound client frame so far (parsed JSON; a non-JSON text frame as a JSON string).
    pub fn frames_received(&self) -> Vec<Value> {
        self.shared.rt.frames.lock().unwrap().clone()
    }

    /// Traffic so far: Realtime frames sent to and received from clients by event, REST
    /// requests by kind (see [`SupabaseCounters`]).
    pub fn counters(&self) -> SupabaseCounters {
        self.shared.counters.snapshot()
    }

    /// Zero the traffic counters (e.g. after a benchmark's warm-up).
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// Wait until [`subscribed_channels`](Self::subscribed_channels) `>= n`; false on timeout.
    pub fn wait_subscribed(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.subscribed_channels() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // ---- REST faults -------------------------------------------------------------------

    /// The next `n` REST requests get `fault` (before any auth or database work).
    pub fn rest_fail_next(&self, n: usize, fault: RestFault) {
        let mut q = self.shared.rest.fail_next.lock().unwrap();
        q.extend((0..n).map(|_| fault.clone()));
    }

    /// While `Some`, every REST request gets this fault.
    pub fn set_rest_outage(&self, fault: Option<RestFault>) {
        *self.shared.rest.outage.lock().unwrap() = fault;
    }

    /// Add a targeted REST fault (see [`RestRule`]).
    pub fn add_rest_rule(&self, rule: RestRule) {
        self.shared.rest.rules.lock().unwrap().push((None, rule));
    }

    /// Add a targeted REST fault that applies only to calls of `function` over RPC
    /// (`/rest/v1/rpc/<function>`); the rule's method, query and body conditions still apply.
    pub fn add_rpc_rule(&self, function: &str, rule: RestRule) {
        self.shared
            .rest
            .rules
            .lock()
            .unwrap()
            .push((Some(function.to_string()), rule));
    }

    /// Sleep this long before handling each REST request.
    pub fn set_rest_latency(&self, d: Duration) {
        *self.shared.rest.latency.lock().unwrap() = d;
    }

    // ---- Realtime faults ---------------------------------------------------------------

    /// Abrupt TCP drop of every socket (no close frame).
    pub fn realtime_drop_all(&self) {
        self.shared.rt.drop_all();
    }

    /// `system` "Server requested disconnect" on every joined topic, then close 1012 (§6.5).
    pub fn realtime_server_disconnect(&self) {
        self.shared.rt.server_disconnect();
    }

    /// While `Some((status, text))`, answer upgrades with this status and `{"error":text}`.
    pub fn set_realtime_refuse(&self, refuse: Option<(u16, String)>) {
        *self.shared.rt.refuse.lock().unwrap() = refuse;
    }

    /// Off = swallow heartbeats silently (a half-open link as the client sees it).
    pub fn set_heartbeat_replies(&self, on: bool) {
        self.shared.rt.heartbeat_replies.store(on, Ordering::SeqCst);
    }

    /// On = open sockets stay open, but the server neither sends nor answers anything (events
    /// are dropped, not buffered; the idle timeout is suspended).
    pub fn set_blackhole(&self, on: bool) {
        self.shared.rt.blackhole.store(on, Ordering::SeqCst);
    }

    /// On = silently drop `postgres_changes` (the rate-limit behaviour, §7).
    pub fn set_drop_events(&self, on: bool) {
        self.shared.rt.drop_events.store(on, Ordering::SeqCst);
    }

    /// On = deliver every `postgres_changes` frame twice (duplicate delivery, §8).
    pub fn set_duplicate_events(&self, on: bool) {
        self.shared.rt.duplicate_events.store(on, Ordering::SeqCst);
    }

    /// On = treat every change as oversized: fields over 64 bytes of JSON are removed and
    /// `errors` is `["Error 413: Payload Too Large"]` (§4.3).
    pub fn set_oversized_events(&self, on: bool) {
        self.shared.rt.oversized_events.store(on, Ordering::SeqCst);
    }

    /// On = the legacy server behaviour of sending every change type that matches table and
    /// filter, whatever the binding's `event` (§5.2).
    pub fn set_send_all_types(&self, on: bool) {
        self.shared.rt.all_types.store(on, Ordering::SeqCst);
    }

    /// What follows an ok join (decided when the system message is due).
    pub fn set_subscribe_status(&self, s: SubscribeMode) {
        *self.shared.rt.subscribe_mode.lock().unwrap() = s;
    }

    /// While `Some(reason)`, joins get `phx_reply` `status:"error"` `{reason}`.
    pub fn set_join_error(&self, reason: Option<String>) {
        *self.shared.rt.join_error.lock().unwrap() = reason;
    }

    /// Delay before any join error reply (the real server sleeps 5 s, §3.5); default 0.
    pub fn set_join_error_delay(&self, d: Duration) {
        *self.shared.rt.join_error_delay.lock().unwrap() = d;
    }

    /// On = the project's Realtime setting "Allow public access" is off: joins with
    /// `private: false` get `PrivateOnly: This project only allows private channels` (after the
    /// join-error delay), and `private: true` joins are authorized for service_role only (no
    /// `realtime.messages` policy is modelled; service_role bypasses RLS, §3.2). A change of the
    /// setting, like any tenant configuration change, disconnects every socket with 1012 (§6.5).
    pub fn set_private_only(&self, on: bool) {
        if self.shared.rt.private_only.swap(on, Ordering::SeqCst) != on {
            self.shared.rt.server_disconnect();
        }
    }

    /// Open sockets with their topics and presence keys (e.g. to pick one to vanish).
    pub fn realtime_sockets(&self) -> Vec<RealtimeSocket> {
        self.shared.rt.sockets()
    }

    /// Black-hole one socket without closing it: nothing more reaches the client, nothing it
    /// sends (heartbeats, a close, a TCP FIN) reaches the server, which notices only when its
    /// idle timeout ([`SupabaseConfig::idle_timeout`], real server 60 s) passes since the last
    /// frame it received; then the socket's channels end and its presence members leave.
    /// False if no such socket is open.
    pub fn realtime_vanish(&self, socket_id: u64) -> bool {
        self.shared.rt.vanish(socket_id)
    }

    /// [`realtime_vanish`](Self::realtime_vanish) every socket tracking presence `key` (e.g. an
    /// sms-sender instance's member key); how many.
    pub fn realtime_vanish_presence_key(&self, key: &str) -> usize {
        self.shared.rt.vanish_presence_key(key)
    }

    /// Lose the next `n` broadcasts from the database (whatever their topic): nobody gets them.
    pub fn drop_next_broadcasts(&self, n: u64) {
        self.shared.rt.broadcast_faults.drop_next(n);
    }

    /// Lose each broadcast from the database with probability `p` (0 = never, 1 = always).
    pub fn set_broadcast_drop_probability(&self, p: f64) {
        self.shared.rt.broadcast_faults.set_drop_probability(p);
    }

    /// While on, lose every broadcast from the database on `topic` (the `realtime.send` topic,
    /// without `realtime:`, e.g. `sms-sender:p3`).
    pub fn set_broadcast_drop_topic(&self, topic: &str, on: bool) {
        self.shared.rt.broadcast_faults.set_drop_topic(topic, on);
    }

    /// While `Some`, Presence misbehaves this way (see [`PresenceFault`]).
    pub fn set_presence_fault(&self, fault: Option<PresenceFault>) {
        *self.shared.rt.presence_fault.lock().unwrap() = fault;
    }

    /// `phx_error` (ref = join_ref) on every joined channel; the channels are gone, the sockets stay.
    pub fn phx_error_all(&self) {
        self.shared.rt.phx_error_all();
    }

    /// `system` error "Token has expired 0 seconds ago" then `phx_close` on every joined channel
    /// (§6.4); the sockets stay.
    pub fn realtime_expire_tokens(&self) {
        self.shared.rt.expire_tokens();
    }

    /// Forget the cached table definitions (after a migration in a test).
    pub fn reload_schema(&self) {
        self.shared.schema.clear();
    }

    /// Stop everything: HTTP server, sockets (dropped), change listener. Idempotent; also on drop.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.server.stop();
        self.shared.rt.drop_all();
    }
}

impl std::fmt::Debug for SupabaseDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseDouble")
            .field("url", &self.url())
            .finish()
    }
}

impl Drop for SupabaseDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Routes requests to REST or Realtime.
struct Router(Arc<Shared>);

impl Handler for Router {
    fn handle(&self, req: Request, stream: &TcpStream) -> Reply {
        let shared = &self.0;
        if req.path.starts_with("/rest/v1/") {
            postgrest::handle(shared, req)
        } else if req.path == "/realtime/v1/websocket" || req.path == "/socket/websocket" {
            realtime::handle_upgrade(shared, req, stream)
        } else {
            // Kong's answer for a path no route matches.
            Reply::Respond(Response::json(
                404,
                &json!({"message": "no Route matched with those values"}),
            ))
        }
    }
}
