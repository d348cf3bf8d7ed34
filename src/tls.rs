//! Where TLS finds its trusted roots, reported for the log.
//!
//! native-tls probes the usual CA bundle locations itself (`openssl-probe`, when each connector
//! is built) and honours `SSL_CERT_FILE` / `SSL_CERT_DIR`, even in the static binary whose
//! vendored OpenSSL has no useful built-in paths. So nothing is configured here: this module only
//! says what will be trusted, so that the log names the bundle, or warns when there is none.
//! Invariants: it never writes the environment (no `set_var`: that is unsound once threads run,
//! and `unsafe` from edition 2024), never trusts a file from the working directory, and TLS
//! verification is never turned off anywhere.

use std::path::Path;

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
