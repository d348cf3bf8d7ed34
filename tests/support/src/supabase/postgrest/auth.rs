//! The key checks in front of REST (§1.1, §1.2): the gateway's `apikey` check (header or
//! query parameter), then the role PostgREST derives from `Authorization` — legacy JWT keys
//! (role from the Bearer, anon without one) and new `sb_` keys (never from a browser, a Bearer
//! must be a JWT).

use super::super::{jwt_claims, looks_like_jwt, JwtProblem, Shared};
use super::render::ApiError;
use crate::http::Request;

/// Which role the request runs as after the key checks.
#[derive(PartialEq)]
pub(super) enum Role {
    Service,
    Anon,
}

/// The gateway's `apikey` check, then the role PostgREST would derive from `Authorization`.
pub(super) fn check_keys(shared: &Shared, req: &Request) -> Result<Role, ApiError> {
    let service = &shared.config.service_key;
    let key = req.header("apikey").map(str::to_string).or_else(|| {
        req.query_pairs()
            .into_iter()
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v)
    });
    let Some(key) = key else {
        return Err(ApiError::gateway(
            "No API key found in request",
            "No `apikey` request header or url param was found.",
        ));
    };
    if key != *service {
        return Err(ApiError::gateway(
            "Invalid API key",
            "Double check your Supabase `anon` or `service_role` API key.",
        ));
    }
    let authorization = req.header("authorization");
    if service.starts_with("sb_") {
        // New-style keys (§1.1, §1.2): never from a browser; a Bearer must repeat the key exactly.
        if req
            .header("user-agent")
            .is_some_and(|ua| ua.contains("Mozilla"))
        {
            return Err(ApiError::gateway(
                "Forbidden use of secret API key in browser",
                "Secret API keys can only be used in a protected environment and should never be used in a browser.",
            ));
        }
        // A Bearer is forwarded to PostgREST, which refuses any value that is not a JWT, even
        // one byte-identical to `apikey` (the API-keys guide, §1.2; PGRST301, §9.5). The gateway
        // only hands PostgREST a service_role JWT when `Authorization` is absent.
        if let Some(token) = authorization.and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) {
            let parts = token.trim().split('.').count();
            let description = if parts != 3 {
                format!("Expected 3 parts in JWT; got {parts}")
            } else {
                // No user sessions are modelled: no JWT verifies against this project's secret.
                "No suitable key or wrong key type".to_string()
            };
            return Err(ApiError::new(401, "PGRST301", description.clone()).header(
                "WWW-Authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            ));
        }
        return Ok(Role::Service);
    }
    // Legacy JWT keys: PostgREST takes the role from the Bearer token, anon without one.
    let Some(token) = authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) else {
        return Ok(Role::Anon);
    };
    let token = token.trim();
    let invalid = |description: &str| {
        ApiError::new(401, "PGRST301", description.to_string()).header(
            "WWW-Authenticate",
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        )
    };
    let parts = token.split('.').count();
    if parts != 3 {
        return Err(invalid(&format!("Expected 3 parts in JWT; got {parts}")));
    }
    if !looks_like_jwt(token) || token != service {
        return Err(invalid("No suitable key or wrong key type"));
    }
    if let Err(JwtProblem::Expired(_)) = jwt_claims(token) {
        return Err(ApiError::new(401, "PGRST303", "JWT expired").header(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"JWT expired\"",
        ));
    }
    Ok(Role::Service)
}
