//! Supabase: the two ways the service talks to the project.
//!
//! - [`realtime`]: the WebSocket that announces queued messages (Phoenix frames in
//!   [`realtime::frame`]);
//! - [`rest`]: the PostgREST client — the claim, the fenced records (`sent`, `failed`, release),
//!   the sweep and orphan pages, and the reads reconciliation and receipts need.

pub mod realtime;
pub mod rest;
