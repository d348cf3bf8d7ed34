//! URLs in the configuration: the base URLs the service adds its paths to, the status callback
//! URL Twilio posts to, and how any of them may be quoted in an error.
//!
//! Invariants: `http://` (cleartext: the service key, the Twilio credentials and callbacks' phone
//! numbers would travel readable) is accepted only for a loopback host; a base URL carries no user
//! info, query or fragment; every message quoting a URL shows it through [`redact_url`], which
//! never shows user info or query values.

use url::{Host, Url};

use super::{err, ConfigError};

/// Check an `http(s)://host[:port][/path]` URL and return it without a trailing slash (as
/// written otherwise: `url::Url` splits it for the checks, its normalised form is not used).
///
/// User info (`user:pass@`) and a query or fragment are refused, with a message that names
/// where the credentials belong: the service adds its own paths after the base (a query would
/// end up in the middle of every request URL), it sends the key and the Twilio credentials in
/// headers from their own variables, and a credential written into a URL has already been
/// copied to wherever URLs go (dashboards, shell history, this log). Silently stripping it
/// would hide that; echoing it would repeat the leak, so the message shows [`redact_url`].
pub(super) fn parse_base_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let (scheme, rest) = ["https://", "http://"]
        .iter()
        .find_map(|s| raw.strip_prefix(s).map(|rest| (*s, rest)))
        .ok_or_else(|| {
            err(
                var,
                format!("{:?} must start with https:// or http://", redact_url(raw)),
            )
        })?;
    let rest = rest.trim_end_matches('/');
    let url = format!("{scheme}{rest}");
    let shown = redact_url(&url);
    let credentials_go = match var {
        "SUPABASE_URL" => "the key belongs in SUPABASE_SERVICE_KEY",
        "TWILIO_API_URL" => "they come from TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        _ => "they belong in their own variables",
    };
    // The same boundary `redact_url` hides: everything before the last '@' ahead of the query.
    if rest.split(['?', '#']).next().unwrap_or("").contains('@') {
        return Err(err(
            var,
            format!(
                "{shown:?} has user info (credentials) before the host; credentials do not \
                 belong in the URL: {credentials_go}"
            ),
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(err(
            var,
            format!(
                "{shown:?} has a query or fragment; a base URL takes neither \
                 (scheme://host[:port][/path]), and credentials do not belong in the URL: \
                 {credentials_go}"
            ),
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    // `Url` refuses an empty host and a port past 65535; it takes `h:` and `h:0`, we do not.
    let valid = Url::parse(&url).is_ok_and(|u| u.host().is_some() && u.port() != Some(0));
    if !valid || authority.ends_with(':') || rest.contains(' ') {
        return Err(err(
            var,
            format!("{shown:?} is not a valid base URL (scheme://host[:port])"),
        ));
    }
    require_tls_off_loopback(var, &url)?;
    Ok(url)
}

/// The most characters of a URL [`redact_url`] shows (the last is `…` when it was cut).
pub const SHOWN_URL_CHARS: usize = 120;

/// `raw`, a URL as configured (valid or not), as it may be shown in a message: the scheme, host,
/// port and path as written, but the user info replaced by `***` and every query and fragment
/// value by `***`, names kept (`https://***@host/path?apikey=***`); at most
/// [`SHOWN_URL_CHARS`] characters. Quote the result with `{:?}`, which escapes control
/// characters. It errs on the side of hiding:
/// - user info is everything before the *last* `@` ahead of the query, since a password may hold
///   an unencoded `/` (an `@` in a path hides the host too);
/// - a password cut short by an unencoded `?` or `#` (`https://u:p?w@host`) leaves `u:p` where
///   the host would be: an authority whose port is not digits is hidden when an `@` follows;
/// - a query item without `=` is hidden whole (it may be a bare token);
/// - a value without `scheme://` is shown only when it looks like a host name (the common slip
///   `abc.supabase.co`) or a path; anything else, such as a key pasted into the wrong variable,
///   is `***`.
pub fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) if is_scheme(&raw[..i]) => raw.split_at(i + 3),
        _ => ("", raw),
    };
    let (before, tail) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let mut out = String::from(scheme);
    match before.rfind('@') {
        Some(at) => {
            out.push_str("***@");
            out.push_str(&before[at + 1..]);
        }
        None => {
            let (authority, path) = before.split_at(before.find('/').unwrap_or(before.len()));
            if scheme.is_empty() && !looks_like_host(authority) {
                return "***".to_string();
            }
            if tail.contains('@') && !is_host_port(authority) {
                out.push_str("***");
            } else {
                out.push_str(authority);
            }
            out.push_str(path);
        }
    }
    let (query, fragment) = match tail.find('#') {
        Some(i) => (&tail[..i], Some(&tail[i + 1..])),
        None => (tail, None),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        mask_values(&mut out, query);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        mask_values(&mut out, fragment);
    }
    if out.chars().count() > SHOWN_URL_CHARS {
        out = out.chars().take(SHOWN_URL_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// `name=value&…` with each value as `***` (an empty one stays empty) and each item without
/// `=` as `***`.
fn mask_values(out: &mut String, items: &str) {
    for (i, item) in items.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match item.split_once('=') {
            Some((name, "")) => {
                out.push_str(name);
                out.push('=');
            }
            Some((name, _)) => {
                out.push_str(name);
                out.push_str("=***");
            }
            None if item.is_empty() => {}
            None => out.push_str("***"),
        }
    }
}

/// An RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `host` or `host:digits` (an IPv6 literal in brackets counts as a host).
fn is_host_port(authority: &str) -> bool {
    if authority.starts_with('[') {
        return true;
    }
    match authority.rsplit_once(':') {
        Some((_, port)) => port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// Whether a value written without a scheme is shown: empty (a bare path), `localhost`, an IPv6
/// literal, an IPv4 address, or dotted labels of letters, digits and `-` (at most 63 each) ending
/// in a top-level domain of letters, with an optional numeric port. A token has no dot, an
/// `sb_secret_` key has `_`, a JWT begins with `eyJ` (base64 of `{"`) and ends in its signature.
fn looks_like_host(authority: &str) -> bool {
    if authority.is_empty() || authority.starts_with('[') {
        return true;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => authority,
    };
    if host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    labels.len() > 1
        && !host.starts_with("eyJ")
        && (2..=63).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Refuse an `http://` URL unless its host is a loopback address: `localhost`, an IPv4 address
/// in 127.0.0.0/8 or the IPv6 loopback `[::1]`, as `url::Url` reads the host (the same reading
/// the HTTP client connects by).
fn require_tls_off_loopback(var: &'static str, url: &str) -> Result<(), ConfigError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(());
    };
    let parsed = Url::parse(url).ok();
    let loopback = match parsed.as_ref().and_then(Url::host) {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback {
        return Ok(());
    }
    // Unparsed, the host is what follows the user info: never show that.
    let host = parsed.as_ref().and_then(Url::host_str).unwrap_or_else(|| {
        let before_query = rest.split(['?', '#']).next().unwrap_or("");
        let after_userinfo = before_query.rsplit('@').next().unwrap_or("");
        after_userinfo.split('/').next().unwrap_or("")
    });
    let shown: String = host.chars().take(80).collect();
    Err(err(
        var,
        format!(
            "http:// to {shown:?} would send credentials in cleartext; use https:// \
             (http:// is only accepted for loopback: 127.0.0.0/8, localhost, [::1])"
        ),
    ))
}

/// `https://x` → `wss://x`, `http://x` → `ws://x`.
pub(super) fn websocket_base(base: &str) -> String {
    match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    }
}

/// Check `STATUS_CALLBACK_URL` and return it as written (trimmed): Twilio signs the URL verbatim,
/// so it is only checked, never normalised. User info is allowed (Twilio answers a server's Basic
/// challenge with it) but is not the host: the host follows the last '@' before the query.
pub(super) fn status_callback_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim();
    let shown = redact_url(url);
    let host = ["https://", "http://"]
        .into_iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .map_or("", |rest| {
            let before_query = rest.split(['?', '#']).next().unwrap_or("");
            let after_userinfo = before_query.rsplit('@').next().unwrap_or("");
            after_userinfo.split('/').next().unwrap_or("")
        });
    if host.is_empty() || host.contains('_') || url.contains(' ') {
        return Err(err(
            var,
            format!(
                "{shown:?} is not a public http(s) URL (Twilio refuses hosts with \
                 underscores); it must end in /twilio/status"
            ),
        ));
    }
    if Url::parse(url).is_err() {
        return Err(err(var, format!("{shown:?} is not a valid URL")));
    }
    if !url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .ends_with("/twilio/status")
    {
        return Err(err(
            var,
            format!("{shown:?} must point at this service's /twilio/status path"),
        ));
    }
    // Callbacks carry phone numbers and message SIDs, and a signature an observer could replay:
    // cleartext only where nothing crosses a network.
    require_tls_off_loopback(var, url)?;
    Ok(url.to_string())
}
