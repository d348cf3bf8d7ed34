//! The credentials in the configuration: the Supabase key (which kind, and whether it can do the
//! job) and the Twilio SIDs and token.
//!
//! Invariant: no error message here quotes a credential's value; at most its length, or a JWT's
//! role claim (bounded), which is not the key.

use super::{err, vars, ConfigError, KeyKind};

/// `TWILIO_ACCOUNT_SID`, trimmed: `AC` and 32 hex digits. The error gives only the value's
/// length, and says so when an API key SID (`SK…`) was given instead.
pub(super) fn account_sid(raw: &str) -> Result<String, ConfigError> {
    let sid = raw.trim();
    if is_sid(sid, "AC") {
        return Ok(sid.to_string());
    }
    let hint = if sid.starts_with("SK") {
        "; an API key SID starts with SK, use the account SID"
    } else {
        ""
    };
    Err(err(
        vars::TWILIO_ACCOUNT_SID.name,
        format!(
            "must be \"AC\" followed by 32 hex digits (the value has {} characters{hint})",
            sid.chars().count()
        ),
    ))
}

/// `TWILIO_AUTH_TOKEN`, as written: white space anywhere in it is refused.
pub(super) fn auth_token(raw: String) -> Result<String, ConfigError> {
    if raw.trim() != raw || raw.chars().any(char::is_whitespace) {
        return Err(err(vars::TWILIO_AUTH_TOKEN.name, "contains white space"));
    }
    Ok(raw)
}

/// `TWILIO_MESSAGING_SERVICE_SID`, trimmed: `MG` and 32 hex digits (not a secret: quoted).
pub(super) fn messaging_service_sid(raw: &str) -> Result<String, ConfigError> {
    let sid = raw.trim();
    if !is_sid(sid, "MG") {
        return Err(err(
            vars::TWILIO_MESSAGING_SERVICE_SID.name,
            format!("{sid:?} is not \"MG\" followed by 32 hex digits"),
        ));
    }
    Ok(sid.to_string())
}

/// `prefix` followed by exactly 32 hex digits.
fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Decide how to present a Supabase key, refusing keys that cannot do the job.
pub(super) fn classify_supabase_key(key: &str) -> Result<KeyKind, ConfigError> {
    const VAR: &str = vars::SUPABASE_SERVICE_KEY.name;
    if key.starts_with("sb_secret_") {
        return Ok(KeyKind::Secret);
    }
    if key.starts_with("sb_publishable_") {
        return Err(err(
            VAR,
            "is a publishable key; use the secret key (sb_secret_…) or the service_role key",
        ));
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(err(
            VAR,
            "is neither a JWT (service_role key) nor an sb_secret_ key",
        ));
    }
    let claims = base64url_decode(parts[1])
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .ok_or_else(|| {
            err(
                VAR,
                "is a malformed JWT (its payload is not base64url JSON)",
            )
        })?;
    match claims.get("role").and_then(|r| r.as_str()) {
        Some("service_role") => {}
        Some("anon") => {
            return Err(err(
                VAR,
                "is the anon key; the service_role key is needed to read and update messages",
            ))
        }
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(err(
                VAR,
                format!("is a JWT for role {shown:?}, not service_role"),
            ));
        }
        None => return Err(err(VAR, "is a JWT without a role claim")),
    }
    if let Some(exp) = claims.get("exp").and_then(|e| e.as_f64()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if exp < now {
            return Err(err(VAR, "is a JWT that has expired (exp is in the past)"));
        }
    }
    Ok(KeyKind::LegacyJwt)
}

/// Decode unpadded base64url (JWT segments); `None` on any invalid character. Hand-written on
/// purpose: the `base64` crate's decoder is not otherwise linked (ureq only encodes), and using
/// it here grew the release binary by 4 KiB.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
