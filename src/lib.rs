//! sms-sender: turns rows of a Supabase `messages` table into SMS through Twilio.
//!
//! A row moved to `status='queued_for_send'` is announced over Supabase Realtime; the service
//! claims it (so no other instance sends it), sends it through Twilio's Messages API and records
//! `sent` with the SID, or `failed`. Realtime has no replay, so every (re)subscription is followed
//! by a catch-up sweep over REST.
//!
//! # Layout
//! The folders follow the path a message takes:
//! 1. [`supabase`] — [`supabase::realtime`] (the WebSocket that says which messages are ready:
//!    Postgres Changes, or in scaled mode Presence and the partitions' Broadcast channels; it
//!    emits what it sees into a [`supabase::realtime::sink::RealtimeSink`]), [`supabase::rest`]
//!    (the claim, the fenced records, the pages the sweeps read) and [`supabase::rpc`] (scaled
//!    mode's detection and batch claim);
//! 2. [`delivery`] — [`delivery::wakeups`] (the sink: what Realtime's news does) and the
//!    [`delivery::sweep`] feed the [`delivery::queue`] and the [`delivery::pool`] of sender
//!    threads, each running [`delivery::sender`] (ticket → claim → check → send → record): a
//!    [`delivery::ticket`] is in hand before the claim, which is a short [`delivery::lease`]
//!    renewed while held; [`delivery::retry`] judges a failed create; [`delivery::reconcile`]
//!    answers "did Twilio create it?" after an ambiguous create; [`delivery::unrecorded`] keeps
//!    sends whose `sent` write the database refuses; [`delivery::handover`] ends claims early at
//!    shutdown; [`delivery::orphans`] settles claims nobody finished; [`delivery::receipts`]
//!    applies Twilio's status callbacks; [`delivery::partitions`] says what this instance serves
//!    in scaled mode; pacing, concurrency and the circuit sit beside them;
//! 3. [`twilio`] — [`twilio::client`] (create, list) and [`twilio::receipts`] (status callbacks:
//!    signature and form);
//! 4. [`ops`] — the HTTP port ([`ops::server`]) with `/health`, `/livez` ([`ops::liveness`]),
//!    `/metrics` and the receipts route, the `check` command ([`ops::preflight`]), sd_notify
//!    ([`ops::systemd`]).
//!
//! Dependencies point one way: `supabase/`, `twilio/` and `ops/` never name `delivery/`, and only
//! `main.rs` names [`service`] (`scripts/check-module-deps.sh`).
//!
//! Foundations, flat: [`config`] (environment → validated `Config`, from one table of
//! variables), [`service`] (wiring and shutdown order), [`clients`] (the REST and Twilio clients
//! and the TLS connector they share), [`http`] (the shared agent, TLS, transport errors, the
//! observer of outcomes), [`message`], [`timestamp`], [`backoff`], [`shutdown`], [`signals`],
//! [`logging`], [`phone`] and [`redact`] (the one scrub of text from outside: secrets removed,
//! numbers masked, line breaks escaped, length bounded), [`sync`] (poison-tolerant locks, named
//! threads).
//! `main.rs` only reads the config, starts logging and signals, runs, and maps exit codes.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod backoff;
pub mod clients;
pub mod config;
pub mod delivery;
pub mod http;
pub mod logging;
pub mod message;
pub mod ops;
pub mod phone;
pub mod redact;
pub mod service;
pub mod shutdown;
pub mod signals;
pub mod supabase;
pub mod sync;
pub mod timestamp;
pub mod twilio;
