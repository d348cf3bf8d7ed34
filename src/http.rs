//! HTTP plumbing shared by the Supabase REST and Twilio clients: the `ureq` agent (timeouts,
//! keep-alive pool, no redirects, a bounded DNS lookup that skips IP literals and reuses recent
//! answers), the TLS connector (one for the whole service, Realtime included), what TLS trusts,
//! reading a response body, transport failures described without their URL (Twilio URLs
//! carry the account SID) and scrubbed, and the [`Observer`] a client tells what each request
//! came to (so the clients know nothing of who watches: `/health`, `/metrics`).
//!
//! Where TLS finds its trusted roots:
//! native-tls probes the usual CA bundle locations itself (`openssl-probe`) and honours
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`, even in the static binary whose vendored OpenSSL has no
//! useful built-in paths. It parses one bundle file in full — `SSL_CERT_FILE`, else the first
//! bundle found in the usual places (Debian's 140-odd certificates cost about 1 MiB of RSS) — and
//! adds `SSL_CERT_DIR` and the usual certificate directories as hashed lookup directories, read
//! only for the CAs a handshake needs. So `SSL_CERT_DIR` alone saves nothing where a bundle sits
//! in a usual place: that bundle is parsed as well. Nothing is configured here: this module only
//! says what will be trusted, so that the log names it, or warns when there is nothing; the
//! connector is built once for the whole service, so the bundle is parsed once.
//! Invariants: it never writes the environment (no `set_var`: that is unsound once threads run,
//! and `unsafe` from edition 2024), never trusts a file from the working directory, and TLS
//! verification is never turned off anywhere.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::Locked;

/// CA bundle locations of common distributions and base images, most common first (the files
/// `openssl-probe` looks for, as far as this service's images go).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, distroless, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, macOS-style
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/certs/ca-bundle.crt",
];

/// What TLS will trust: `SSL_CERT_FILE` when set, else the first bundle found in the usual
/// places, and `SSL_CERT_DIR` when set (native-tls loads both); `None` when there is nothing
/// (every TLS connection would then fail).
pub fn trust_store() -> Option<String> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(|v| format!("{name}={}", v.to_string_lossy()))
    };
    let file = var("SSL_CERT_FILE").or_else(|| {
        BUNDLES
            .iter()
            .find(|p| Path::new(p).is_file())
            .map(|p| p.to_string())
    });
    match (file, var("SSL_CERT_DIR")) {
        (Some(file), Some(dir)) => Some(format!("{file} and {dir}")),
        (file, dir) => file.or(dir),
    }
}

/// The TLS settings every connection shares (REST, Twilio, Realtime): certificates verified
/// against the CA bundle. Built once (it parses the whole bundle, which costs time and memory)
/// and only when an `https://` or `wss://` URL needs it.
pub fn tls_connector() -> Result<Arc<native_tls::TlsConnector>, String> {
    native_tls::TlsConnector::new()
        .map(Arc::new)
        .map_err(|e| format!("TLS setup failed: {e}"))
}

/// A ureq agent with the given limits; `tls` is required for `https://` URLs.
fn build_agent(
    connect_timeout: Duration,
    total_timeout: Duration,
    pool_per_host: usize,
    tls: Option<Arc<native_tls::TlsConnector>>,
    resolver: BoundedResolver,
) -> ureq::Agent {
    let mut builder = ureq::AgentBuilder::new();
    if let Some(tls) = tls {
        builder = builder.tls_connector(tls);
    }
    builder
        .resolver(resolver)
        .timeout_connect(connect_timeout)
        .timeout(total_timeout)
        .max_idle_connections_per_host(pool_per_host)
        .max_idle_connections(pool_per_host * 2)
        .user_agent(concat!("sms-sender/", env!("CARGO_PKG_VERSION")))
        .redirects(0)
        .build()
}

/// A ureq agent (timeouts, keep-alive pool, no redirects, the bounded resolver) whose idle
/// connections can be let go ([`Agent::release_idle`]); cheap to clone (the clones share it).
///
/// ureq 2 keeps pooled connections until they are reused or pushed out by newer ones (it has no
/// idle timeout), so the connections a burst opened — a TLS session each, tens of KiB — would
/// stay for the life of the process. Releasing swaps in a fresh agent with an empty pool (same
/// settings, same resolver and its cache, same TLS connector): the old pool's idle connections
/// close when its last request ends; a request in flight keeps its connection to the end, which
/// is then closed instead of pooled. So no request is cut short or delayed; the next ones open
/// new connections.
#[derive(Clone)]
pub struct Agent(Arc<AgentInner>);

struct AgentInner {
    current: Mutex<ureq::Agent>,
    connect_timeout: Duration,
    total_timeout: Duration,
    pool_per_host: usize,
    tls: Option<Arc<native_tls::TlsConnector>>,
    resolver: BoundedResolver,
}

impl Agent {
    /// With the given limits; `tls` is required for `https://` URLs.
    pub fn new(
        connect_timeout: Duration,
        total_timeout: Duration,
        pool_per_host: usize,
        tls: Option<Arc<native_tls::TlsConnector>>,
    ) -> Agent {
        let resolver = BoundedResolver::new(connect_timeout);
        let agent = build_agent(
            connect_timeout,
            total_timeout,
            pool_per_host,
            tls.clone(),
            resolver.clone(),
        );
        Agent(Arc::new(AgentInner {
            current: Mutex::new(agent),
            connect_timeout,
            total_timeout,
            pool_per_host,
            tls,
            resolver,
        }))
    }

    /// The agent to make a request with.
    pub fn current(&self) -> ureq::Agent {
        self.0.current.locked().clone()
    }

    /// Close every pooled idle connection (see [`Agent`]).
    pub fn release_idle(&self) {
        let i = &self.0;
        let fresh = build_agent(
            i.connect_timeout,
            i.total_timeout,
            i.pool_per_host,
            i.tls.clone(),
            i.resolver.clone(),
        );
        // The old agent is dropped outside the lock (closing its connections takes syscalls).
        let _old = std::mem::replace(&mut *i.current.locked(), fresh);
    }
}

/// How long a resolved name is used again without asking the resolver. musl's `getaddrinfo`
/// does not say how long an answer is valid (no TTL), so this is a fixed, short period: a host
/// that moves is followed within 30 s, and a burst that opens many connections resolves its
/// host about once (only lookups that start before the first answer came each ask).
pub const DNS_CACHE_TTL: Duration = Duration::from_secs(30);

/// The most names remembered (the service talks to two or three hosts).
const DNS_CACHE_NAMES: usize = 8;

/// Name resolution with a time limit, and without the resolver where it is not needed.
///
/// ureq's total timeout does not cover DNS (the system resolver cannot be interrupted), and a
/// lease must bound every request from the moment it starts, so a lookup runs on a short-lived
/// thread that is abandoned when it takes longer than the limit. That thread is spared when it
/// can be: an IP literal (`netloc` is `host:port`, IPv6 in brackets) is parsed, and a name
/// resolved within [`DNS_CACHE_TTL`] is answered from [`DnsCache`] (failures are never kept,
/// so a failing name is asked again on the next connection).
#[derive(Clone)]
struct BoundedResolver {
    limit: Duration,
    cache: Arc<Mutex<DnsCache>>,
}

impl BoundedResolver {
    fn new(limit: Duration) -> BoundedResolver {
        BoundedResolver {
            limit,
            cache: Arc::new(Mutex::new(DnsCache::new(DNS_CACHE_TTL, DNS_CACHE_NAMES))),
        }
    }

    /// The lookup on its own thread, abandoned after the limit.
    fn lookup(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        let (tx, rx) = std::sync::mpsc::channel();
        let name = netloc.to_string();
        crate::sync::spawn_named("dns", 128 * 1024, move || {
            let _ = tx.send(name.to_socket_addrs().map(Iterator::collect));
        })?;
        rx.recv_timeout(self.limit).unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "name resolution took longer than {} ms",
                    self.limit.as_millis()
                ),
            ))
        })
    }
}

impl ureq::Resolver for BoundedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = ip_literal(netloc) {
            return Ok(vec![addr]);
        }
        let now = Instant::now();
        if let Some(addrs) = self.cache.locked().get(netloc, now) {
            return Ok(addrs);
        }
        let addrs = self.lookup(netloc)?;
        self.cache.locked().put(netloc, &addrs, Instant::now());
        Ok(addrs)
    }
}

/// The address of a `host:port` whose host is an IP address (`[v6]:port` for IPv6), else `None`.
fn ip_literal(netloc: &str) -> Option<SocketAddr> {
    netloc.parse().ok()
}

/// Names resolved recently: each answer is used for `ttl` after it came, at most `names` are
/// kept (the oldest answer makes room), and an empty answer is not kept.
struct DnsCache {
    ttl: Duration,
    names: usize,
    entries: Vec<(String, Instant, Vec<SocketAddr>)>,
}

impl DnsCache {
    fn new(ttl: Duration, names: usize) -> DnsCache {
        DnsCache {
            ttl,
            names,
            entries: Vec::new(),
        }
    }

    /// The answer for `netloc` if it is younger than the period at `now` (expired ones go).
    fn get(&mut self, netloc: &str, now: Instant) -> Option<Vec<SocketAddr>> {
        let ttl = self.ttl;
        self.entries
            .retain(|(_, at, _)| now.checked_duration_since(*at).is_some_and(|age| age < ttl));
        self.entries
            .iter()
            .find(|(name, _, _)| name == netloc)
            .map(|(_, _, addrs)| addrs.clone())
    }

    /// Keep the answer for `netloc` obtained at `now`.
    fn put(&mut self, netloc: &str, addrs: &[SocketAddr], now: Instant) {
        if addrs.is_empty() || self.names == 0 {
            return;
        }
        self.entries.retain(|(name, _, _)| name != netloc);
        if self.entries.len() >= self.names {
            if let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].1) {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push((netloc.to_string(), now, addrs.to_vec()));
    }
}

/// What one request came to, as the client that made it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The server answered with this HTTP status (whatever became of the body after it).
    Answered(u16),
    /// The server answered with this status, but the body could not be read.
    Interrupted(u16),
    /// No answer: the connection could not be made, or broke before the status came.
    Unanswered,
}

/// Told what each request of a client came to. Implementations only record (a flag, a
/// counter): they are called on the request's thread, after the exchange, and must not block.
pub trait Observer: Send + Sync {
    /// One request came to `exchange`.
    fn exchanged(&self, exchange: Exchange);
}

/// The observer of a client nobody watches (the `check` command's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn exchanged(&self, _: Exchange) {}
}

/// The most of a response body read (ureq's own `into_string` limit).
const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// A response body as text, read once into a buffer sized from `Content-Length` and kept
/// as it is when it is UTF-8 (ureq's `into_string` grows its buffer from empty, then copies
/// the text once more through `from_utf8_lossy`). Invalid UTF-8 is replaced, as ureq does.
pub fn read_body(resp: ureq::Response) -> std::io::Result<String> {
    use std::io::Read;
    let expected = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf = Vec::with_capacity(expected.clamp(512, 256 * 1024));
    resp.into_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > BODY_LIMIT {
        return Err(std::io::Error::other("response body over 10 MiB"));
    }
    Ok(String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A transport failure in words, without its URL (Twilio URLs carry the account SID, which
/// operators keep secret), and scrubbed ([`crate::redact::scrub`]): ureq's message and the
/// underlying error can still quote a URL, a host's answer or a proxy's text.
pub fn describe_transport(t: &ureq::Transport) -> String {
    let mut text = t.kind().to_string();
    if let Some(message) = t.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(source) = std::error::Error::source(t) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    crate::redact::scrub(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_literals_are_parsed_names_are_not() {
        assert_eq!(ip_literal("127.0.0.1:443"), Some(addr("127.0.0.1:443")));
        assert_eq!(ip_literal("[::1]:8080"), Some(addr("[::1]:8080")));
        assert_eq!(
            ip_literal("[2001:db8::5]:443"),
            Some(addr("[2001:db8::5]:443"))
        );
        for name in [
            "api.twilio.com:443",
            "localhost:80",
            "xyz.supabase.co:443",
            "127.0.0.1", // no port: not a netloc ureq makes; resolved as a name
            "::1:443",   // IPv6 without brackets is ambiguous
            "1.2.3.4.nip.io:443",
            "999.1.1.1:443",
        ] {
            assert_eq!(ip_literal(name), None, "{name}");
        }
    }

    #[test]
    fn the_cache_answers_within_the_period_only() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(30), 8);
        assert_eq!(cache.get("a:443", t0), None);
        cache.put("a:443", &[addr("10.0.0.1:443")], t0);
        assert_eq!(
            cache.get("a:443", t0 + Duration::from_secs(29)),
            Some(vec![addr("10.0.0.1:443")])
        );
        assert_eq!(cache.get("b:443", t0), None, "another name");
        assert_eq!(cache.get("a:443", t0 + Duration::from_secs(30)), None);
        assert!(cache.entries.is_empty(), "the expired answer is dropped");
        // A newer answer replaces the older one and starts its own period.
        cache.put("a:443", &[addr("10.0.0.1:443")], t0);
        cache.put(
            "a:443",
            &[addr("10.0.0.2:443")],
            t0 + Duration::from_secs(20),
        );
        assert_eq!(
            cache.get("a:443", t0 + Duration::from_secs(45)),
            Some(vec![addr("10.0.0.2:443")])
        );
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn failures_are_not_cached_and_the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(30), 2);
        cache.put("empty:443", &[], t0);
        assert_eq!(cache.get("empty:443", t0), None);
        cache.put("a:443", &[addr("10.0.0.1:443")], t0);
        cache.put(
            "b:443",
            &[addr("10.0.0.2:443")],
            t0 + Duration::from_secs(1),
        );
        cache.put(
            "c:443",
            &[addr("10.0.0.3:443")],
            t0 + Duration::from_secs(2),
        );
        let now = t0 + Duration::from_secs(3);
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get("a:443", now), None, "the oldest made room");
        assert!(cache.get("b:443", now).is_some() && cache.get("c:443", now).is_some());
        let mut off = DnsCache::new(Duration::from_secs(30), 0);
        off.put("a:443", &[addr("10.0.0.1:443")], t0);
        assert_eq!(off.get("a:443", t0), None);
    }

    #[test]
    fn the_resolver_answers_literals_without_a_thread_and_reports_failures() {
        use ureq::Resolver;
        let r = BoundedResolver::new(Duration::from_secs(2));
        assert_eq!(r.resolve("127.0.0.1:9").unwrap(), vec![addr("127.0.0.1:9")]);
        assert_eq!(r.resolve("[::1]:9").unwrap(), vec![addr("[::1]:9")]);
        assert!(
            r.cache.locked().entries.is_empty(),
            "literals are not cached"
        );
        // `.invalid` never resolves (RFC 2606): the failure is returned and not kept.
        assert!(r.resolve("no-such-host.invalid:443").is_err());
        assert!(r.cache.locked().entries.is_empty());
    }
}
