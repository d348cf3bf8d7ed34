//! The configuration's unit tests: defaults, every variable's errors, secrets never shown.

use super::*;
use std::collections::HashMap;

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.sig",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(claims.as_bytes())
    )
}

fn base() -> HashMap<&'static str, String> {
    HashMap::from([
        ("SUPABASE_URL", "https://abc.supabase.co/".to_string()),
        (
            "SUPABASE_SERVICE_KEY",
            jwt(r#"{"role":"service_role","exp":4102444800}"#),
        ),
        (
            "TWILIO_ACCOUNT_SID",
            format!("AC{}", "0123456789abcdef".repeat(2)),
        ),
        ("TWILIO_AUTH_TOKEN", "supersecrettoken".to_string()),
        ("TWILIO_PHONE_NUMBER", "+15551234567".to_string()),
    ])
}

fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
    Config::from_source(&|name| vars.get(name).cloned())
}

fn load_with(changes: &[(&'static str, Option<&str>)]) -> Result<Config, ConfigError> {
    let mut vars = base();
    for (k, v) in changes {
        match v {
            Some(v) => vars.insert(k, v.to_string()),
            None => vars.remove(k),
        };
    }
    load(&vars)
}

#[test]
fn the_lease_defaults_short_and_grows_with_the_http_timeout() {
    assert_eq!(shortest_lease_secs(Duration::from_secs(15)), 30);
    assert_eq!(shortest_lease_secs(Duration::from_secs(1)), 3);
    let slow = load_with(&[("HTTP_TIMEOUT_MS", Some("30000"))]).unwrap();
    assert_eq!(
        slow.sending_timeout,
        Duration::from_secs(53),
        "1.5 × (30 s + 5 s)"
    );
    let fast = load_with(&[("HTTP_TIMEOUT_MS", Some("1000"))]).unwrap();
    assert_eq!(
        fast.sending_timeout,
        Duration::from_secs(30),
        "never below the default"
    );
    let set = load_with(&[
        ("HTTP_TIMEOUT_MS", Some("1000")),
        ("SENDING_TIMEOUT_SECS", Some("3")),
    ])
    .unwrap();
    assert_eq!(set.sending_timeout, Duration::from_secs(3));
    let e = load_with(&[
        ("SENDING_TIMEOUT_SECS", Some("40")),
        ("HTTP_TIMEOUT_MS", Some("30000")),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("SENDING_TIMEOUT_SECS") && e.contains("53 s"),
        "{e}"
    );
}

#[test]
fn the_liveness_window_outlasts_every_healthy_wait() {
    let c = load(&base()).unwrap();
    assert_eq!(c.liveness_window, Duration::from_secs(120));
    assert_eq!(
        shortest_liveness_window_secs(Duration::from_millis(500), Duration::from_secs(1)),
        7
    );
    let short = load_with(&[
        ("REALTIME_HEARTBEAT_MS", Some("500")),
        ("HTTP_TIMEOUT_MS", Some("1000")),
        ("LIVENESS_WINDOW_SECS", Some("8")),
    ])
    .unwrap();
    assert_eq!(short.liveness_window, Duration::from_secs(8));
    let e = load_with(&[("LIVENESS_WINDOW_SECS", Some("30"))])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("LIVENESS_WINDOW_SECS") && e.contains("at least 55 s"),
        "{e}"
    );
}

#[test]
fn defaults_and_derived_urls() {
    let c = load(&base()).unwrap();
    assert_eq!(c.supabase.rest_url, "https://abc.supabase.co/rest/v1");
    assert_eq!(
        c.supabase.realtime_url,
        "wss://abc.supabase.co/realtime/v1/websocket"
    );
    assert_eq!(c.supabase.key_kind, KeyKind::LegacyJwt);
    assert_eq!(c.twilio.api_url, "https://api.twilio.com");
    assert_eq!(c.twilio.sender, SmsSender::Number("+15551234567".into()));
    assert_eq!(c.port, 8080);
    assert_eq!(c.sender_threads, 128);
    assert_eq!(c.max_retries, 3);
    assert_eq!(c.retry_backoff, Duration::from_millis(1000));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_filter, "info");
    assert_eq!(c.http_timeout, Duration::from_secs(15));
    assert_eq!(c.sending_timeout, Duration::from_secs(30));
    assert_eq!(c.orphan_check, Duration::from_secs(60));
    assert_eq!(c.sweep_interval, Duration::from_secs(60));
}

#[test]
fn local_http_url_maps_to_ws() {
    let c = load_with(&[("SUPABASE_URL", Some("http://127.0.0.1:54321"))]).unwrap();
    assert_eq!(
        c.supabase.realtime_url,
        "ws://127.0.0.1:54321/realtime/v1/websocket"
    );
    assert_eq!(c.supabase.rest_url, "http://127.0.0.1:54321/rest/v1");
}

#[test]
fn http_is_refused_except_for_loopback() {
    for (var, url) in [
        ("SUPABASE_URL", "http://abc.supabase.co"),
        ("SUPABASE_URL", "http://10.0.0.1:54321"),
        ("SUPABASE_URL", "http://128.0.0.1"),
        ("SUPABASE_URL", "http://localhost.example.com"),
        ("TWILIO_API_URL", "http://api.twilio.com"),
        ("TWILIO_API_URL", "http://[::2]:80"),
        ("TWILIO_API_URL", "http://127.0.0.1.nip.io"),
        (
            "STATUS_CALLBACK_URL",
            "http://sms.example.com/twilio/status",
        ),
        (
            "STATUS_CALLBACK_URL",
            "http://sms.example.com:8080/twilio/status",
        ),
    ] {
        let e = load_with(&[(var, Some(url))]).unwrap_err();
        assert_eq!(e.var, var, "{url}: {e}");
        assert!(e.problem.contains("use https://"), "{url}: {e}");
    }
    for (var, url) in [
        ("SUPABASE_URL", "http://127.0.0.1:54321"),
        ("SUPABASE_URL", "http://127.8.9.10"),
        ("SUPABASE_URL", "http://LOCALHOST:1"),
        ("TWILIO_API_URL", "http://[::1]:4010"),
        ("TWILIO_API_URL", "https://api.dublin.ie1.twilio.com"),
        ("STATUS_CALLBACK_URL", "http://127.0.0.1:8080/twilio/status"),
        ("STATUS_CALLBACK_URL", "http://localhost/twilio/status"),
        ("STATUS_CALLBACK_URL", "http://[::1]:8080/twilio/status"),
        (
            "STATUS_CALLBACK_URL",
            "https://sms.example.com/twilio/status",
        ),
    ] {
        assert!(load_with(&[(var, Some(url))]).is_ok(), "{var}={url}");
    }
}

#[test]
fn messaging_service_replaces_from() {
    let sid = format!("MG{}", "ab".repeat(16));
    let c = load_with(&[
        ("TWILIO_PHONE_NUMBER", None),
        ("TWILIO_MESSAGING_SERVICE_SID", Some(&sid)),
    ])
    .unwrap();
    assert_eq!(c.twilio.sender, SmsSender::MessagingService(sid));
}

#[test]
fn each_problem_names_its_variable() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("SUPABASE_URL", None, "is required"),
        ("SUPABASE_URL", Some("ftp://x"), "must start with https://"),
        ("SUPABASE_URL", Some("https://"), "not a valid base URL"),
        (
            "SUPABASE_URL",
            Some("http://h:99999"),
            "not a valid base URL",
        ),
        ("SUPABASE_SERVICE_KEY", Some("hello"), "neither a JWT"),
        (
            "SUPABASE_SERVICE_KEY",
            Some("sb_publishable_x"),
            "publishable",
        ),
        ("TWILIO_ACCOUNT_SID", Some("AC123"), "32 hex digits"),
        ("TWILIO_AUTH_TOKEN", None, "is required"),
        ("TWILIO_AUTH_TOKEN", Some("a b"), "white space"),
        ("TWILIO_PHONE_NUMBER", Some("555-1234"), "is not E.164"),
        (
            "TWILIO_PHONE_NUMBER",
            None,
            "unless TWILIO_MESSAGING_SERVICE_SID",
        ),
        ("TWILIO_MESSAGING_SERVICE_SID", Some("MGxyz"), "32 hex"),
        ("TWILIO_API_URL", Some("api.twilio.com"), "must start with"),
        ("PORT", Some("eighty"), "not a whole number"),
        ("PORT", Some("0"), "out of range"),
        ("SENDER_THREADS", Some("0"), "out of range"),
        ("MAX_RETRIES", Some("-1"), "not a whole number"),
        ("RETRY_BACKOFF_MS", Some("0"), "out of range"),
        ("LOG_FORMAT", Some("xml"), "not \"text\" or \"json\""),
        ("REALTIME_HEARTBEAT_MS", Some("60000"), "out of range"),
        ("SENDING_TIMEOUT_SECS", Some("29"), "= 30 s"),
        ("ORPHAN_CHECK_SECS", Some("0"), "out of range"),
        ("SWEEP_INTERVAL_SECS", Some("x"), "not a whole number"),
        ("HTTP_TIMEOUT_MS", Some("50"), "out of range"),
        ("MAX_SENDS_PER_SECOND", Some("0"), "not a rate"),
        ("MAX_SENDS_PER_SECOND", Some("fast"), "not a rate"),
        (
            "STATUS_CALLBACK_URL",
            Some("https://my_host.example/twilio/status"),
            "underscores",
        ),
        (
            "STATUS_CALLBACK_URL",
            Some("https://h.example/other"),
            "/twilio/status",
        ),
    ];
    for (var, value, expected) in cases {
        let e = load_with(&[(var, *value)]).unwrap_err();
        assert_eq!(e.var, *var, "{var}={value:?} gave {e}");
        assert!(e.to_string().contains(expected), "{var}={value:?} gave {e}");
        assert!(e.to_string().starts_with(&format!("{var}: ")));
    }
}

#[test]
fn the_phone_number_error_reads_as_the_readme_quotes_it() {
    let e = load_with(&[("TWILIO_PHONE_NUMBER", Some("555-1234"))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "TWILIO_PHONE_NUMBER: \"555-1234\" is not E.164 (+ and 8–15 digits)"
    );
}

#[test]
fn key_checks_read_the_jwt_claims() {
    let anon = jwt(r#"{"role":"anon","exp":4102444800}"#);
    let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&anon))]).unwrap_err();
    assert!(e.problem.contains("anon key"), "{e}");
    let expired = jwt(r#"{"role":"service_role","exp":1000}"#);
    let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&expired))]).unwrap_err();
    assert!(e.problem.contains("expired"), "{e}");
    let c = load_with(&[("SUPABASE_SERVICE_KEY", Some("sb_secret_abc123"))]).unwrap();
    assert_eq!(c.supabase.key_kind, KeyKind::Secret);
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let secret_key = jwt(r#"{"role":"anon","exp":4102444800}"#);
    let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&secret_key))]).unwrap_err();
    assert!(!e.to_string().contains(&secret_key));
    let sid = "ACnothexnothexnothexnothexnothex12";
    let e = load_with(&[("TWILIO_ACCOUNT_SID", Some(sid))]).unwrap_err();
    assert!(!e.to_string().contains(sid), "{e}");
    let c = load(&base()).unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("supersecrettoken"));
    assert!(!dump.contains(base()["SUPABASE_SERVICE_KEY"].as_str()));
    assert!(!dump.contains("0123456789abcdef0123456789abcdef"));
}

#[test]
fn redact_url_shows_the_place_never_the_credentials() {
    let key = jwt(r#"{"role":"service_role","exp":4102444800}"#);
    let cases: &[(&str, &str)] = &[
        ("https://abc.supabase.co", "https://abc.supabase.co"),
        ("http://127.0.0.1:54321/x/", "http://127.0.0.1:54321/x/"),
        (
            "http://[::1]:8080/twilio/status",
            "http://[::1]:8080/twilio/status",
        ),
        ("https://h?apikey=s3cret", "https://h?apikey=***"),
        (
            "https://user:tok@sms.example.com/twilio/status?a=1&b=&c#rc=5&rp=all",
            "https://***@sms.example.com/twilio/status?a=***&b=&***#rc=***&rp=***",
        ),
        ("https://tok@h", "https://***@h"),
        // A password with an unencoded '/', '@' or '?': hidden all the same.
        ("https://u:pa/ss@h/p", "https://***@h/p"),
        ("https://u:p@ss@h", "https://***@h"),
        ("https://u:p?w@host/p", "https://***?***"),
        ("https://u:p#w@host", "https://***#***"),
        // An '@' in a query value does not hide the host.
        ("https://h:8080/p?email=a@b.c", "https://h:8080/p?email=***"),
        // No scheme: host names and paths are shown, anything else is not.
        ("abc.supabase.co", "abc.supabase.co"),
        ("localhost:54321", "localhost:54321"),
        ("/twilio/status", "/twilio/status"),
        ("user:pw@abc.supabase.co", "***@abc.supabase.co"),
        ("0123456789abcdef0123456789abcdef", "***"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYSJ9.abc", "***"),
        ("10.0.0.1:54321/p", "10.0.0.1:54321/p"),
        ("sb_secret_abc123", "***"),
        (&key, "***"),
        ("ftp://x", "ftp://x"),
        ("", ""),
    ];
    for (raw, shown) in cases {
        assert_eq!(redact_url(raw), *shown, "{raw}");
    }
    let long = format!("https://h/{}?k=v", "p".repeat(300));
    let shown = redact_url(&long);
    assert_eq!(shown.chars().count(), SHOWN_URL_CHARS);
    assert!(shown.ends_with('…'), "{shown}");
}

#[test]
fn redact_url_never_shows_a_marker_in_user_info_or_query() {
    let mark = "Zq9xMARKx";
    let templates = [
        "https://{}@h",
        "https://u:{}@h/p",
        "https://u:a/{}@h",
        "https://u:a?{}@h",
        "https://h?apikey={}",
        "https://h?{}",
        "https://h?a=1&apikey={}&b=2",
        "https://h/p#token={}",
        "http://u:{}@[::1]:80/x?y=1",
        "{}",
        "u:{}@h.example",
        "HTTPS://{}:x@h",
        "https://h/?k={}=more",
    ];
    for template in templates {
        let raw = template.replace("{}", mark);
        let shown = redact_url(&raw);
        assert!(!shown.contains(mark), "{raw} shown as {shown}");
    }
}

#[test]
fn url_errors_never_show_user_info_or_query_values() {
    let secret = "s3cr3tVALUE";
    let cases = [
        (
            "SUPABASE_URL",
            format!("https://abc.supabase.co?apikey={secret}"),
            "has a query",
        ),
        (
            "SUPABASE_URL",
            format!("https://abc.supabase.co/?apikey={secret}#x"),
            "has a query",
        ),
        (
            "SUPABASE_URL",
            format!("https://service:{secret}@abc.supabase.co"),
            "has user info",
        ),
        (
            "SUPABASE_URL",
            format!("http://service:{secret}@abc.supabase.co"),
            "has user info",
        ),
        ("SUPABASE_URL", secret.to_string(), "must start with"),
        (
            "SUPABASE_URL",
            format!("ftp://u:{secret}@h"),
            "must start with",
        ),
        (
            "TWILIO_API_URL",
            format!("https://AC0123:{secret}@api.twilio.com"),
            "TWILIO_AUTH_TOKEN",
        ),
        (
            "TWILIO_API_URL",
            format!("https://api.twilio.com?token={secret}"),
            "has a query",
        ),
        (
            "TWILIO_API_URL",
            format!("http://u:{secret}@[::1]:99999"),
            "has user info",
        ),
        (
            "STATUS_CALLBACK_URL",
            format!("https://user:{secret}@sms.example.com/wrong"),
            "/twilio/status path",
        ),
        (
            "STATUS_CALLBACK_URL",
            format!("http://user:{secret}@sms.example.com/twilio/status"),
            "use https://",
        ),
        (
            "STATUS_CALLBACK_URL",
            format!("https://sms.example.com/other?token={secret}"),
            "/twilio/status path",
        ),
        (
            "STATUS_CALLBACK_URL",
            format!("https://user:{secret}@my_host.example/twilio/status"),
            "underscores",
        ),
        (
            "STATUS_CALLBACK_URL",
            format!("https://user:{secret}@h^st.example/twilio/status"),
            "not a valid URL",
        ),
    ];
    for (var, url, expected) in cases {
        let e = load_with(&[(var, Some(&url))]).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.var, var, "{url}: {text}");
        assert!(text.contains(expected), "{url}: {text}");
        assert!(!text.contains(secret), "{url}: {text}");
        assert!(!format!("{e:?}").contains(secret), "{url}: {e:?}");
    }
}

#[test]
fn credentials_in_a_base_url_are_refused_naming_where_they_belong() {
    let e = load_with(&[("SUPABASE_URL", Some("https://x:k@abc.supabase.co"))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SUPABASE_URL: \"https://***@abc.supabase.co\" has user info (credentials) before \
         the host; credentials do not belong in the URL: the key belongs in \
         SUPABASE_SERVICE_KEY"
    );
    let e = load_with(&[("SUPABASE_URL", Some("https://abc.supabase.co?apikey=k"))]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("SUPABASE_URL: \"https://abc.supabase.co?apikey=***\" has a query"),
        "{e}"
    );
    assert!(e.to_string().contains("SUPABASE_SERVICE_KEY"), "{e}");
}

#[test]
fn a_status_callback_url_keeps_its_user_info_and_query() {
    // Twilio answers a Basic challenge with the URL's user info, and signs the URL as written.
    for url in [
        "https://user:tok@sms.example.com/twilio/status",
        "https://user_name:tok@sms.example.com/twilio/status?x=1",
        "https://sms.example.com/twilio/status?x=1#rc=2",
    ] {
        let c = load_with(&[("STATUS_CALLBACK_URL", Some(url))]).unwrap();
        assert_eq!(c.status_callback_url.as_deref(), Some(url));
    }
}

#[test]
fn log_format_is_checked_first_and_alone() {
    let e = load_with(&[("LOG_FORMAT", Some("yaml")), ("SUPABASE_URL", None)]).unwrap_err();
    assert_eq!(e.var, "LOG_FORMAT", "{e}");
    let vars = HashMap::from([("LOG_FORMAT", " json ".to_string())]);
    let src = Source(&|name| vars.get(name).cloned());
    assert_eq!(log_format(&src), Ok(LogFormat::Json));
    let vars = HashMap::from([("LOG_FORMAT", "JSON".to_string())]);
    let src = Source(&|name| vars.get(name).cloned());
    assert_eq!(log_format(&src).unwrap_err().var, "LOG_FORMAT");
    let none = |_: &str| None;
    assert_eq!(log_format(&Source(&none)), Ok(LogFormat::Text));
}

#[test]
fn empty_values_count_as_unset() {
    let c = load_with(&[("PORT", Some("")), ("LOG_FORMAT", Some(" "))]).unwrap();
    assert_eq!(c.port, 8080);
    let e = load_with(&[("TWILIO_AUTH_TOKEN", Some(""))]).unwrap_err();
    assert_eq!(e.var, "TWILIO_AUTH_TOKEN");
}
#[test]
fn the_table_lists_every_variable_read_in_the_order_read() {
    let vars = base();
    let read = std::cell::RefCell::new(Vec::<String>::new());
    let c = Config::from_source(&|name| {
        let mut read = read.borrow_mut();
        if !read.iter().any(|n| n == name) {
            read.push(name.to_string());
        }
        vars.get(name).cloned()
    });
    assert!(c.is_ok(), "{c:?}");
    let table: Vec<&str> = vars::VARS
        .iter()
        .filter(|v| v.reader == vars::Reader::Config)
        .map(|v| v.name)
        .collect();
    assert_eq!(read.into_inner(), table);
}

#[test]
fn defaults_are_the_tables() {
    let c = load(&base()).unwrap();
    let default = |var: &vars::Var| match var.value {
        vars::Value::Whole { default, .. } => default,
        _ => unreachable!(),
    };
    assert_eq!(u64::from(c.port), default(&vars::PORT));
    assert_eq!(c.sender_threads as u64, default(&vars::SENDER_THREADS));
    assert_eq!(u64::from(c.max_retries), default(&vars::MAX_RETRIES));
    assert_eq!(
        c.sending_timeout.as_secs(),
        default(&vars::SENDING_TIMEOUT_SECS)
    );
    assert_eq!(
        c.liveness_window.as_secs(),
        default(&vars::LIVENESS_WINDOW_SECS)
    );
    assert_eq!(
        c.reconcile_settle.as_millis() as u64,
        default(&vars::RECONCILE_SETTLE_MS)
    );
    assert_eq!(c.max_sends_per_second, None);
    assert_eq!(c.status_callback_url, None);
}
