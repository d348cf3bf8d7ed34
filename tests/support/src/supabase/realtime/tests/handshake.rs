//! The WebSocket upgrade: key and `vsn` checks with the server's error texts.

use serde_json::json;

use crate::supabase::testkit::{env, env_with, ws_connect};
use crate::supabase::{make_test_jwt, SupabaseConfig};

#[test]
fn handshake_errors_use_the_server_texts() {
    let e = env();
    assert_eq!(
        ws_connect(&e.sb, "vsn=1.0.0").err(),
        Some((401, r#"{"error":"API key is missing"}"#.into()))
    );
    let other = make_test_jwt(&json!({"role": "service_role", "exp": 4102444800u64, "x": 1}));
    assert_eq!(
        ws_connect(&e.sb, &format!("apikey={other}")).err(),
        Some((
            401,
            r#"{"error":"Failed to validate JWT signature"}"#.into()
        ))
    );
    assert_eq!(
        ws_connect(&e.sb, "apikey=potato").err(),
        Some((
            401,
            r#"{"error":"The token provided is not a valid JWT"}"#.into()
        ))
    );
    let key = e.sb.service_key();
    assert_eq!(
        ws_connect(&e.sb, &format!("apikey={key}&vsn=3.0.0")).err(),
        Some((403, String::new()))
    );
    e.sb.set_realtime_refuse(Some((503, "Realtime is restarting".into())));
    assert_eq!(
        ws_connect(&e.sb, &format!("apikey={key}")).err(),
        Some((503, r#"{"error":"Realtime is restarting"}"#.into()))
    );
    e.sb.set_realtime_refuse(None);
    // No vsn means 1.0.0.
    assert!(ws_connect(&e.sb, &format!("apikey={key}")).is_ok());
    assert_eq!(e.sb.realtime_connections(), 1);

    // A configured key that is expired or lacks claims is refused with the §2.2 texts.
    let expired = make_test_jwt(&json!({"role": "service_role", "exp": 1000}));
    let e2 = env_with(SupabaseConfig {
        service_key: expired.clone(),
        ..Default::default()
    });
    assert_eq!(
        ws_connect(&e2.sb, &format!("apikey={expired}")).err(),
        Some((401, r#"{"error":"Token has expired"}"#.into()))
    );
}
