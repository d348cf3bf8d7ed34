//! Fuzz target: Twilio Messages API response bodies, through `parse_created` and `parse_rejection`.
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/twilio_body/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::TWILIO_BODY, data));
