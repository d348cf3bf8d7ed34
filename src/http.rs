//! HTTP plumbing shared by the Supabase REST and Twilio clients: the `ureq` agent (timeouts,
//! keep-alive pool, no redirects, a bounded DNS lookup), the TLS connector, what TLS trusts,
//! reading a response body, and transport failures described without their URL (Twilio URLs
//! carry the account SID) and scrubbed.
//!
//! Where TLS finds its trusted roots:
//! native-tls probes the usual CA bundle locations itself (`openssl-probe`, when each connector
//! is built) and honours `SSL_CERT_FILE` / `SSL_CERT_DIR`, even in the static binary whose
//! vendored OpenSSL has no useful built-in paths. So nothing is configured here: this module only
//! says what will be trusted, so that the log names the bundle, or warns when there is none.
//! Invariants: it never writes the environment (no `set_var`: that is unsound once threads run,
//! and `unsafe` from edition 2024), never trusts a file from the working directory, and TLS
//! verification is never turned off anywhere.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// What TLS will trust: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the first bundle found
/// in the usual places; `None` when there is nothing (every TLS connection would then fail).
pub fn trust_store() -> Option<String> {
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(format!("{var}={}", v.to_string_lossy()));
        }
    }
    BUNDLES
        .iter()
        .find(|p| Path::new(p).is_file())
        .map(|p| p.to_string())
}

/// The TLS settings every HTTPS client shares: certificates verified against the CA bundle.
/// Built once (it parses the whole bundle, which costs time and memory) and only when an
/// `https://` URL needs it.
pub fn tls_connector() -> Result<Arc<native_tls::TlsConnector>, String> {
    native_tls::TlsConnector::new()
        .map(Arc::new)
        .map_err(|e| format!("TLS setup failed: {e}"))
}

/// A ureq agent with the given limits; `tls` is required for `https://` URLs.
pub fn http_agent(
    connect_timeout: Duration,
    total_timeout: Duration,
    pool_per_host: usize,
    tls: Option<Arc<native_tls::TlsConnector>>,
) -> ureq::Agent {
    let mut builder = ureq::AgentBuilder::new();
    if let Some(tls) = tls {
        builder = builder.tls_connector(tls);
    }
    builder
        .resolver(BoundedResolver(connect_timeout))
        .timeout_connect(connect_timeout)
        .timeout(total_timeout)
        .max_idle_connections_per_host(pool_per_host)
        .max_idle_connections(pool_per_host * 2)
        .user_agent(concat!("sms-sender/", env!("CARGO_PKG_VERSION")))
        .redirects(0)
        .build()
}

/// Name resolution with a time limit. ureq's total timeout does not cover DNS (the system
/// resolver cannot be interrupted), and a lease must bound every request from the moment it
/// starts, so the lookup runs on a short-lived thread that is abandoned when it takes longer than
/// the limit. Connections are pooled, so this runs only when a new connection is opened.
struct BoundedResolver(Duration);

impl ureq::Resolver for BoundedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        use std::net::ToSocketAddrs;
        let (tx, rx) = std::sync::mpsc::channel();
        let netloc = netloc.to_string();
        crate::sync::spawn_named("dns", 128 * 1024, move || {
            let _ = tx.send(netloc.to_socket_addrs().map(Iterator::collect));
        })?;
        rx.recv_timeout(self.0).unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("name resolution took longer than {} ms", self.0.as_millis()),
            ))
        })
    }
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
