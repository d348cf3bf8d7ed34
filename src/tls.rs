//! Where TLS finds its trusted roots.
//!
//! The static binary carries a vendored OpenSSL whose built-in certificate paths point into its
//! build prefix, not at the system bundle, so on a distroless or scratch image nothing would
//! verify. At start, before any thread exists, we point OpenSSL at the first CA bundle found in
//! the usual places unless the operator set `SSL_CERT_FILE` or `SSL_CERT_DIR`. Verification is
//! never turned off.

use std::path::Path;

/// CA bundle locations of common distributions and base images, most common first.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, distroless, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, macOS-style
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/certs/ca-bundle.crt",
];

/// Set `SSL_CERT_FILE` to the first bundle that exists (relative `./ca-certificates.crt` last, for
/// a bare directory holding only the binary and a bundle). Returns what TLS will use, for the log.
///
/// Must run while the process is single-threaded (it sets an environment variable).
pub fn configure_ca_bundle() -> Option<String> {
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(format!("{var}={}", v.to_string_lossy()));
        }
    }
    let found = BUNDLES
        .iter()
        .copied()
        .chain(std::iter::once("ca-certificates.crt"))
        .find(|p| Path::new(p).is_file())?;
    let path = std::fs::canonicalize(found).unwrap_or_else(|_| found.into());
    std::env::set_var("SSL_CERT_FILE", &path);
    Some(format!("SSL_CERT_FILE={}", path.display()))
}
