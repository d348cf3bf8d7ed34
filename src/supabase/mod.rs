//! Supabase: the two ways the service talks to the project.
//!
//! - [`realtime`]: the WebSocket that announces queued messages (Phoenix frames in
//!   [`realtime::frame`]);
//! - [`rest`]: the PostgREST client — the claim, the fenced records (`sent`, `failed`, release),
//!   the sweep and orphan pages, and the reads reconciliation and receipts need;
//! - [`rpc`]: the database functions of scaled mode (detection and the batch claim), called
//!   through the same client.

pub mod realtime;
pub mod rest;
pub mod rpc;
