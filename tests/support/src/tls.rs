//! A throwaway certificate authority for TLS tests and the TLS benchmark: a CA and a leaf for IP
//! 127.0.0.1 that it signed, made with the `openssl` CLI in a directory the caller owns. The CA
//! is marked a CA (basic constraints, key usage), as OpenSSL 3 requires of an issuer; nothing of
//! it is trusted unless a test puts it in the service's `SSL_CERT_FILE` or `SSL_CERT_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian keeps the system's trusted roots (what production images ship).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The files of a throwaway CA.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The leaf certificate for IP 127.0.0.1 (PEM).
    pub cert: PathBuf,
    /// The leaf's private key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// Make a CA and a leaf in `dir`; the error names the failing `openssl` step.
    pub fn create(dir: &Path, name: &str) -> Result<TestCa, String> {
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("openssl: {e} (is the openssl CLI installed?)"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let subject = format!("/CN={name}");
        #[rustfmt::skip]
        openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", &subject,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        #[rustfmt::skip]
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/CN=127.0.0.1",
        ])?;
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
            .map_err(|e| format!("leaf.ext: {e}"))?;
        #[rustfmt::skip]
        openssl(&[
            "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext",
        ])?;
        Ok(TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
        })
    }

    /// Write `out`: the system bundle followed by this CA, so that the service parses every root
    /// production trusts and can still reach the local TLS servers.
    pub fn with_system_bundle(&self, out: &Path) -> Result<PathBuf, String> {
        let mut trust = std::fs::read(SYSTEM_BUNDLE)
            .map_err(|e| format!("{SYSTEM_BUNDLE}: {e} (install ca-certificates)"))?;
        if !trust.ends_with(b"\n") {
            trust.push(b'\n');
        }
        trust.extend(std::fs::read(&self.ca).map_err(|e| format!("{}: {e}", self.ca.display()))?);
        std::fs::write(out, trust).map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(out.to_path_buf())
    }
}
