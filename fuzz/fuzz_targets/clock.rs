//! Fuzz target: timestamps, through `timestamp::parse_rfc3339` (PostgreSQL `timestamptz`, RFC 3339)
//! and `timestamp::parse_rfc2822` (Twilio's dates), each input whole and line by line (with the
//! checks that an accepted instant round-trips and that `saturating_sub` never panics).
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/clock/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::CLOCK, data));
