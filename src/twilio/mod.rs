//! Twilio: the Messages API and what it sends back.
//!
//! - [`client`]: the create request, the message list reconciliation reads, and the reading of
//!   Twilio's answers (never retrying by itself: create is not idempotent);
//! - [`receipts`]: delivery receipts (status callbacks): the URL naming the row, the signature
//!   check, the callback read, and the inbox contract of the worker that applies them.

pub mod client;
pub mod receipts;
