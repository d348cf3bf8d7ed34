//! Fuzz target: Supabase Realtime (Phoenix V1) text frames, through `realtime::frame::decode`
//! and `binding_id`.
//!
//! The harnesses and their invariants live in `fuzz/harness.rs`, shared with `tests/decoders/`;
//! seeds are in `fuzz/seeds/realtime_frame/`. Run through `make fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(&harness::REALTIME_FRAME, data));
