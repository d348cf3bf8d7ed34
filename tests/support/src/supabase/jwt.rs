//! The keys and tokens shared by REST and Realtime: JWT-shaped test keys ([`test_service_jwt`],
//! [`make_test_jwt`]) and the unverified claim checks both servers apply (`role`, `exp`), with
//! the problems named the way Realtime names them. Signatures are never verified: the double
//! only compares keys.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{json, Value};

/// base64url as JWTs use it: no padding on output, padding tolerated on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A legacy `service_role` key for tests: `{"role":"service_role","exp":<year 2100>}`, signed with
/// a fake signature (the double does not verify signatures, only compares keys).
pub fn test_service_jwt() -> String {
    make_test_jwt(&json!({"iss": "supabase-demo", "role": "service_role", "exp": 4102444800u64}))
}

/// A JWT-shaped token (`header.payload.signature`, base64url) with these claims and a fake
/// signature, e.g. an expired key for handshake tests.
pub fn make_test_jwt(claims: &Value) -> String {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64URL.encode(claims.to_string());
    let signature = B64URL.encode(b"sms-sender-doubles-fake-signature");
    format!("{header}.{payload}.{signature}")
}

/// Why a token is not a usable JWT (the texts Realtime uses, §2.2 / §3.5).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JwtProblem {
    /// Not three base64url JSON parts.
    NotJwt { parts: usize },
    /// `role` or a numeric `exp` missing.
    MissingClaims,
    /// `exp` in the past, by this many seconds.
    Expired(u64),
}

/// Decode a JWT's claims without verifying the signature and check `role`/`exp` like Realtime.
pub(crate) fn jwt_claims(token: &str) -> Result<serde_json::Map<String, Value>, JwtProblem> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtProblem::NotJwt { parts: parts.len() });
    }
    let decode = |s: &str| -> Option<Value> {
        serde_json::from_slice(&B64URL.decode(s.as_bytes()).ok()?).ok()
    };
    let (Some(Value::Object(_)), Some(Value::Object(claims))) =
        (decode(parts[0]), decode(parts[1]))
    else {
        return Err(JwtProblem::NotJwt { parts: 3 });
    };
    let exp = claims.get("exp").and_then(Value::as_f64);
    if !claims.get("role").is_some_and(Value::is_string) || exp.is_none() {
        return Err(JwtProblem::MissingClaims);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let exp = exp.unwrap_or(0.0);
    if exp <= now {
        return Err(JwtProblem::Expired((now - exp) as u64));
    }
    Ok(claims)
}

/// Whether `key` is shaped like a JWT (three dot-separated parts with a JSON header).
pub(crate) fn looks_like_jwt(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() == 3
        && B64URL
            .decode(parts[0].as_bytes())
            .ok()
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .is_some_and(|v| v.is_object())
}

/// The `role` claim of a JWT that passes Realtime's checks.
pub(crate) fn jwt_role(token: &str) -> Option<String> {
    jwt_claims(token)
        .ok()?
        .get("role")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_jwt_has_role_and_future_exp() {
        let claims = jwt_claims(&test_service_jwt()).unwrap();
        assert_eq!(claims["role"], "service_role");
        assert!(looks_like_jwt(&test_service_jwt()));
        assert!(!looks_like_jwt("sb_secret_abc"));
        assert_eq!(jwt_claims("potato"), Err(JwtProblem::NotJwt { parts: 1 }));
        let expired = make_test_jwt(&json!({"role": "service_role", "exp": 1000}));
        assert!(matches!(jwt_claims(&expired), Err(JwtProblem::Expired(_))));
        let no_exp = make_test_jwt(&json!({"role": "service_role"}));
        assert_eq!(jwt_claims(&no_exp), Err(JwtProblem::MissingClaims));
    }
}
