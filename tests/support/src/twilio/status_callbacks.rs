//! Status callbacks as Twilio posts them: the `X-Twilio-Signature` it computes, a plain form
//! POST to the callback URL, and [`TwilioDouble::send_status_callback`], which posts one for a
//! stored message on demand (the double sends none on its own).

use super::TwilioDouble;
use crate::http;
use base64::Engine as _;
use std::net::TcpStream;
use std::time::Duration;

impl TwilioDouble {
    /// Post a status callback for stored message `sid` to its `StatusCallback` URL, signed as
    /// Twilio signs it (docs/twilio.md §6.3). Returns the receiver's HTTP status (`None`: no answer).
    pub fn send_status_callback(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<u32>,
    ) -> Option<u16> {
        let message = self.messages().into_iter().find(|m| m.sid == sid)?;
        let url = message.status_callback.clone()?;
        let mut params = vec![
            ("MessageSid".to_string(), sid.to_string()),
            ("SmsSid".to_string(), sid.to_string()),
            ("MessageStatus".to_string(), status.to_string()),
            ("SmsStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), message.account_sid.clone()),
            ("To".to_string(), message.to.clone()),
            ("ApiVersion".to_string(), "2010-04-01".to_string()),
        ];
        if let Some(from) = &message.from {
            params.push(("From".to_string(), from.clone()));
        }
        if let Some(code) = error_code {
            params.push(("ErrorCode".to_string(), code.to_string()));
        }
        let signature = twilio_signature(&self.config().auth_token, &url, &params);
        post_form(&url, &params, Some(&signature))
    }
}

/// `X-Twilio-Signature`: HMAC-SHA1 with the auth token over the URL followed by the sorted
/// parameters' names and values, base64 (docs/twilio.md §6.3). Written independently of the
/// service's implementation (a different HMAC library) so each checks the other.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// POST a form to an `http://127.0.0.1:PORT/path` URL with an optional `X-Twilio-Signature`;
/// returns the status (bounded to 5 s).
pub fn post_form(url: &str, params: &[(String, String)], signature: Option<&str>) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", http::percent_encode(k), http::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let sig = signature
        .map(|v| format!("X-Twilio-Signature: {v}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: TwilioProxy/1.1\r\n{sig}\r\n{body}",
        if path.is_empty() { "/" } else { path },
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
