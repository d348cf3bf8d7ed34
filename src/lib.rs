//! sms-sender: turns rows of a Supabase `messages` table into SMS through Twilio.
//!
//! A row moved to `status='queued_for_send'` is announced over Supabase Realtime; the service
//! claims it (so no other instance sends it), sends it through Twilio's Messages API and records
//! `sent` with the SID, or `failed`. Realtime has no replay, so every (re)subscription is followed
//! by a catch-up sweep over REST.
//!
//! # Layout
//! The modules follow the path a message takes:
//! - [`realtime`] (+ [`realtime::frame`]): the WebSocket that says which messages are ready;
//! - [`catchup`]: the REST sweep for what Realtime missed;
//! - [`queue`]: the bounded hand-off to the sender threads ([`pool`], started on demand);
//! - [`sender`]: claim → check → send → record, per message, on blocking threads, under a
//!   [`lease`] whose stamp fences every write; [`in_flight`]: what this instance holds;
//! - [`reconcile`]: "did Twilio create it?" from Twilio's list, after an ambiguous create;
//! - [`orphans`]: settles rows left `sending` by dead instances, reconciling with Twilio;
//! - [`postgrest`]: every database request (claim, record, release, sweep pages);
//! - [`twilio`]: the Messages API request and the reading of its answer;
//! - [`retry`]: the one place that classifies a failed send; [`circuit`]: the pause gate;
//!   [`concurrency`]: how many creates may be in flight, learned from Twilio's 429s;
//!   [`backoff`]: delays.
//!
//! Around them: [`config`] (environment → validated `Config`), [`service`] (wiring and
//! shutdown order), [`server`] (the HTTP port: `/health` from [`health`], `/metrics` from
//! [`metrics`], `/twilio/status` from [`callbacks`]), [`pacer`] (`MAX_SENDS_PER_SECOND`),
//! [`check`] (the `check` command), [`shutdown`] and [`signals`], [`logging`],
//! [`tls`] (which trust store the static binary uses), [`redact`] (masking numbers and account
//! SIDs in text from outside before it is logged), and small helpers [`message`], [`phone`],
//! [`clock`]. `main.rs` only reads the config, starts logging, runs, and maps exit codes.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod backoff;
pub mod callbacks;
pub mod catchup;
pub mod check;
pub mod circuit;
pub mod clock;
pub mod concurrency;
pub mod config;
pub mod health;
pub mod in_flight;
pub mod lease;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod orphans;
pub mod pacer;
pub mod phone;
pub mod pool;
pub mod postgrest;
pub mod queue;
pub mod realtime;
pub mod reconcile;
pub mod redact;
pub mod retry;
pub mod sender;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod signals;
pub mod tls;
pub mod twilio;
