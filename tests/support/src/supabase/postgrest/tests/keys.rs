//! The gateway and JWT key checks for new-style `sb_` keys.

use crate::supabase::testkit::{env_with, http};
use crate::supabase::SupabaseConfig;

#[test]
fn secret_keys_follow_the_new_key_rules() {
    let e = env_with(SupabaseConfig {
        service_key: "sb_secret_test123".into(),
        ..Default::default()
    });
    let ok = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[("apikey", "sb_secret_test123")],
        None,
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let same = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[
            ("apikey", "sb_secret_test123"),
            ("Authorization", "Bearer sb_secret_test123"),
        ],
        None,
    )
    .unwrap();
    // Even byte-identical to `apikey`, a non-JWT Bearer is refused by PostgREST (§1.2).
    assert_eq!(same.status, 401, "{}", same.body);
    assert_eq!(same.json()["code"], "PGRST301");
    assert_eq!(same.json()["message"], "Expected 3 parts in JWT; got 1");
    let other = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[
            ("apikey", "sb_secret_test123"),
            ("Authorization", "Bearer sb_secret_other"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(other.status, 401);
    assert_eq!(other.json()["code"], "PGRST301");
    let browser = http(
        &e.sb,
        "GET",
        "/rest/v1/messages",
        &[
            ("apikey", "sb_secret_test123"),
            ("User-Agent", "Mozilla/5.0"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(browser.status, 401);
}
