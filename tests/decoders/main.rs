//! Every decoder of untrusted input, fed arbitrary and adversarial bytes: none may panic, and
//! each must keep the properties its callers rely on.
//!
//! The decoders read what the network and the environment hand the service: Supabase Realtime
//! frames, PostgREST and Twilio response bodies, the timestamps inside them, and the
//! configuration variables; and text from outside is masked (`redact::scrub`) before it is
//! logged. A panic in one
//! of them takes a sender thread or the Realtime client down on a single odd byte, so these tests
//! throw at them:
//! - random bytes, including invalid UTF-8 (converted lossily where a decoder takes `&str`);
//! - structure-aware mutations of the real frames and bodies described in docs/supabase.md and
//!   docs/twilio.md, which are the seed corpus of the fuzz targets (`fuzz/seeds/<target>/`): swapped JSON types, `null`s, deep
//!   nesting, huge numbers, very long strings, odd Unicode, then flipped, inserted and deleted
//!   bytes;
//! - generated valid inputs, to check properties and not only survival: formatting and unknown
//!   keys do not change a decoded frame, `[]` is a lost claim, an error body always yields its
//!   code, only canonical ids and SIDs and only E.164 senders are accepted, secrets never reach
//!   an error message.
//!
//! A panic fails the test by itself, so nothing here catches unwinds. The per-input invariants
//! (the same ones the fuzz targets check) live in `fuzz/harness.rs`, which is also where a new
//! decoder is registered, one line per decoder. Runs are deterministic: the seed is fixed.
//! `DECODERS_SEED=<n>` explores another one and `DECODERS_SCALE=<k>` multiplies the number of
//! cases, for a longer local run; a failure message always shows the offending input.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fastrand::Rng;
use serde_json::Value;
use sms_sender::message::{ClaimedMessage, MessageId};
use sms_sender::redact::scrub;
use sms_sender::supabase::realtime::frame::{binding_id, decode};
use sms_sender::supabase::rest::{parse_claim, parse_error, Claim, RestError};
use sms_sender::timestamp::{parse_rfc2822, parse_rfc3339};
use sms_sender::twilio::client::{parse_created, parse_rejection, Accepted, SendError};

use harness::{is_e164, Family, FAMILIES};

// ----------------------------------------------------------------------------------------------
// Run parameters and the seed corpus

/// A generator for one test: the run seed mixed with a per-test salt, so that tests running in
/// parallel stay independent and each stays reproducible alone.
fn rng(salt: u64) -> Rng {
    let base = std::env::var("DECODERS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_dec0_de00_0001);
    Rng::with_seed(base ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `n` cases, times `DECODERS_SCALE`.
fn cases(n: usize) -> usize {
    let scale = std::env::var("DECODERS_SCALE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    n * scale.max(1)
}

fn seed_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(family)
}

/// The seed files of a fuzz target, in name order (directory order is not stable).
fn seeds(family: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seed_dir(family);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable seed directory").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable seed"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One seed, by file name: the property tests start from the reference samples too.
fn seed(family: &str, name: &str) -> String {
    let path = seed_dir(family).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn report(test: &str, runs: usize, started: Instant) {
    eprintln!("{test}: {runs} inputs in {:?}", started.elapsed());
}

// ----------------------------------------------------------------------------------------------
// The generators, and the tests by decoder

mod generators;
use generators::*;

mod config;
mod postgrest;
mod realtime_frames;
mod redact;
mod survival;
mod timestamps;
mod twilio;

use config::env_of;
use postgrest::claim_id;

#[test]
fn reference_seeds_mean_what_their_names_say() {
    // The property tests above lean on these samples; a broken seed would weaken them silently.
    let frame = |name| decode(&seed("realtime_frame", name));
    assert!(frame("change_update.json").is_ok());
    assert!(frame("system_subscribed.json").is_ok());
    assert!(frame("join_reply_error_no_topic.json").is_err());
    let id = claim_id();
    let claim = |name| parse_claim(&id, &seed("postgrest_body", name));
    assert!(matches!(claim("claim_won.json"), Ok(Claim::Won(_))));
    assert!(matches!(
        claim("claim_malformed.json"),
        Ok(Claim::Malformed { .. })
    ));
    assert_eq!(
        parse_rejection(400, &seed("twilio_body", "error_21211.json"), None).twilio_code(),
        Some(21211)
    );
    let config = |name| harness::check_config(&env_of(&seed("config", name)));
    assert!(config("legacy_jwt.env").is_ok());
    assert!(config("secret_key_all_vars.env").is_ok());
    assert_eq!(
        config("anon_key_rejected.env").unwrap_err().var,
        "SUPABASE_SERVICE_KEY"
    );
    for (name, _) in seeds("clock") {
        let text = seed("clock", &name);
        let read = text
            .lines()
            .all(|l| parse_rfc3339(l).or_else(|| parse_rfc2822(l)).is_some());
        assert!(read, "clock seed {name} does not parse");
    }
    let masked = scrub(&seed("redact", "error_21211.json"));
    assert!(masked.contains("********0001") && !masked.contains("+15005550001"));
}
