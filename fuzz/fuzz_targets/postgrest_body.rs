//! Fuzz target: PostgREST response bodies, through `parse_claim`, `parse_error` and
//! `MessageId::parse`.
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/postgrest_body/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::POSTGREST_BODY, data));
