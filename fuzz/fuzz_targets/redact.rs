//! Fuzz target: text from outside through `redact::scrub` (with the checks that the result is
//! bounded, on one line, and holds no phone number and no whole account or key SID).
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/redact/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::REDACT, data));
