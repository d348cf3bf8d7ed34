//! Twilio: the Messages API and what it sends back.
//!
//! - [`client`]: the create request, the message list reconciliation reads, and the reading of
//!   Twilio's answers (never retrying by itself: create is not idempotent);
//! - [`receipts`]: delivery receipts (status callbacks), verified and applied to their rows.

pub mod client;
pub mod receipts;
