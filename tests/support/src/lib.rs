//! Local, protocol-faithful doubles of the services sms-sender talks to, and a throwaway
//! PostgreSQL, shared by the integration tests, `make demo`, `make smoke` and the benchmark.
//!
//! # Layout
//! - [`harness`]: the local world (PostgreSQL + doubles) and the service as a child process.
//! - [`prelude`]: what every integration test file shares (binary, recipient, timings, epilogue).
//! - [`http`]: a small HTTP/1.1 server both doubles run on (faults need raw socket control).
//! - [`pg`]: a throwaway PostgreSQL 15 cluster, started as an unprivileged user even under root.
//! - [`twilio`]: the Twilio Messages API double (validation, error bodies, list, faults).
//! - [`tls`]: a throwaway CA and a leaf for 127.0.0.1 (TLS tests and the TLS benchmark).
//! - [`supabase`]: the Supabase double: PostgREST subset and Realtime (Phoenix) fed by
//!   LISTEN/NOTIFY from PostgreSQL, on one port like the real project URL.

pub mod harness;
pub mod http;
pub mod pg;
pub mod prelude;
pub mod supabase;
pub mod tls;
pub mod twilio;
