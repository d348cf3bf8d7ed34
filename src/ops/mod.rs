//! What operators and the platform see: the HTTP port ([`server`]) with `/health` ([`health`]:
//! the connection state, for humans, readiness and startup), `/livez` ([`liveness`]: whether the
//! service's own loops turn, for the liveness probe), `/metrics` ([`metrics`]) and the receipts
//! route, and the `sms-sender check` command ([`preflight`]).

pub mod health;
pub mod liveness;
pub mod metrics;
pub mod preflight;
pub mod server;
