//! What operators and the platform see: the HTTP port ([`server`]) with `/health` ([`health`]:
//! the connection state, for humans, readiness and startup), `/livez` ([`liveness`]: whether the
//! service's own loops turn, for the liveness probe), `/metrics` ([`metrics`]) and the receipts
//! route, the `sms-sender check` command ([`preflight`]), and the notifications a systemd unit
//! waits for ([`systemd`]); [`observers`] turn what the HTTP clients report into `/health` and
//! `/metrics`.

pub mod health;
pub mod liveness;
pub mod metrics;
pub mod observers;
pub mod preflight;
pub mod server;
pub mod systemd;
