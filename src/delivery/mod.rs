//! Delivery: from an id that is ready to a row that says `sent` or `failed`, in flow order.
//!
//! - [`queue`]: the bounded hand-off from Realtime (through [`wakeups`], what Realtime's news
//!   does) and the [`sweep`] to the sender threads;
//! - [`pool`]: the sender threads, started on demand up to `SENDER_THREADS`;
//! - [`partitions`]: in scaled mode, which partitions this instance claims and whether it is the
//!   one sweeper;
//! - [`sender`]: per message, claim → check → send → record, under a [`lease`] whose stamp fences
//!   every write; [`in_flight`] is what this instance holds;
//! - around each create: a [`ticket`] (taken before the claim), made of [`pacer`] (`MAX_SENDS_PER_SECOND`), [`concurrency`] (how many creates may
//!   be in flight, learned from Twilio's 429s), [`circuit`] (the pause gate during outages and
//!   account problems), [`retry`] (the one place a failed send is classified);
//! - after an ambiguous create: [`reconcile`] ("did Twilio create it?" from Twilio's list);
//! - after a `sent` write the database refuses: [`unrecorded`] (the fact kept and retried);
//! - afterwards, for claims nobody finished: [`orphans`]; at shutdown, [`handover`] ends the
//!   claims still in flight early so that a successor settles them;
//! - delivery receipts (Twilio's status callbacks): [`receipts`] applies them to their rows;
//! - for the operations port: [`gauges`] (the queue and the circuit, read-only).

pub mod circuit;
pub mod concurrency;
pub mod gauges;
pub mod handover;
pub mod in_flight;
pub mod lease;
pub mod orphans;
pub mod pacer;
pub mod partitions;
pub mod pool;
pub mod queue;
pub mod receipts;
pub mod reconcile;
pub mod retry;
pub mod sender;
pub mod sweep;
pub mod ticket;
pub mod unrecorded;
pub mod wakeups;
