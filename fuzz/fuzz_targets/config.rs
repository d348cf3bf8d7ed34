//! Fuzz target: the environment, as `NAME=value` lines, through `Config::from_source` (with the
//! check that no secret value ever reaches an error message or `Debug` output).
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/config/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::CONFIG, data));
