//! What operators and the platform see: the HTTP port ([`server`]) with `/health` ([`health`]),
//! `/metrics` ([`metrics`]) and the receipts route, and the `sms-sender check` command
//! ([`preflight`]).

pub mod health;
pub mod metrics;
pub mod preflight;
pub mod server;
