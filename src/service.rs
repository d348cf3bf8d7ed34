//! Wiring: builds every part from the [`Config`], runs until shutdown, then winds down in order.
//!
//! Threads: the Realtime task on the main thread (smol executor), `SENDER_THREADS` blocking
//! senders, one catch-up sweeper, one orphan checker, the HTTP server, the receipts worker (when
//! enabled), the signal watcher, the systemd notifier (under a `Type=notify` unit). Shutdown
//! order: the Realtime task leaves its channel and returns; health turns `shutting_down`; the
//! queue closes (waiting ids are abandoned: their rows are still `queued_for_send`); senders
//! finish or give back what they hold, within [`SHUTDOWN_DEADLINE`]; claims still in flight then
//! are handed over ([`crate::delivery::handover`]) before the exit, within [`HAND_OVER_TIME`].

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::clients::{self, Clients, ClientsError, Observers};
use crate::config::{Config, SmsSender};
use crate::delivery::circuit::Circuit;
use crate::delivery::concurrency::Limiter;
use crate::delivery::gauges::DeliveryGauges;
use crate::delivery::handover;
use crate::delivery::in_flight::InFlight;
use crate::delivery::orphans::{self, OrphanCheck};
use crate::delivery::pacer::Pacer;
use crate::delivery::partitions::Ownership;
use crate::delivery::pool::SenderPool;
use crate::delivery::queue::WorkQueue;
use crate::delivery::receipts;
use crate::delivery::sender::{self, Pipeline};
use crate::delivery::sweep::{self, SweepTrigger, Sweeper};
use crate::delivery::unrecorded::{self, Unrecorded};
use crate::delivery::wakeups::Wakeups;
use crate::ops::health::Health;
use crate::ops::liveness::{Liveness, QueueState};
use crate::ops::metrics::Metrics;
use crate::ops::observers::{DatabaseStatus, TwilioRequests};
use crate::ops::server::{self, Admin, Receipts};
use crate::ops::systemd;
use crate::phone;
use crate::shutdown::Shutdown;
use crate::supabase::realtime::{self, Subscription, Timing};
use crate::supabase::rest::Rest;
use crate::twilio::client::Twilio;

/// Time allowed from the shutdown signal for in-flight work to finish (Cloud Run kills at 10 s).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

/// Time allowed after [`SHUTDOWN_DEADLINE`] to hand over the claims still in flight.
pub const HAND_OVER_TIME: Duration = Duration::from_millis(1500);

/// Rows per catch-up page.
const SWEEP_PAGE: usize = 200;

/// A failure to start (the service never ran).
#[derive(Debug)]
pub enum StartError {
    /// The TLS connector could not be built (no usable CA bundle, OpenSSL failure).
    Tls(String),
    /// The HTTP port could not be served (in use, not permitted).
    Port {
        /// `PORT`.
        port: u16,
        /// Why.
        error: std::io::Error,
    },
    /// A thread could not be started.
    Thread {
        /// Which one.
        what: &'static str,
        /// Why.
        error: std::io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Tls(e) => f.write_str(e),
            StartError::Port { port, error } => {
                write!(f, "PORT {port}: cannot serve health checks: {error}")
            }
            StartError::Thread { what, error } => write!(f, "cannot start {what}: {error}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Tls(_) => None,
            StartError::Port { error, .. } | StartError::Thread { error, .. } => Some(error),
        }
    }
}

/// `map_err` for a thread that would not start.
fn thread(what: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |error| StartError::Thread { what, error }
}

/// What every part shares, built before anything starts.
struct Shared {
    /// Which partitions this instance serves (everything in the default mode).
    ownership: Ownership,
    health: Health,
    metrics: Arc<Metrics>,
    liveness: Liveness,
    rest: Rest,
    queue: WorkQueue,
    circuit: Circuit,
}

/// What the wind-down needs of the running parts.
struct Running {
    senders: Arc<SenderPool>,
    in_flight: InFlight,
    unrecorded: Unrecorded,
    /// The receipts worker, when receipts are on.
    receipts_worker: Option<JoinHandle<()>>,
}

/// Run the service until `shutdown` fires (`main` connects it to SIGTERM and SIGINT).
pub fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let health = Health::new();
    let metrics = Arc::new(Metrics::default());
    let Clients { rest, twilio, tls } = clients::build(
        &config,
        Observers {
            rest: Arc::new(DatabaseStatus(health.database_status())),
            twilio: Arc::new(TwilioRequests(metrics.clone())),
        },
    )
    .map_err(|ClientsError::Tls(e)| StartError::Tls(e))?;
    let (ownership, subscription) = detect_mode(&rest, &shutdown);
    let shared = Shared {
        ownership,
        health,
        metrics,
        liveness: Liveness::new(config.liveness_window),
        rest,
        queue: WorkQueue::new((config.sender_threads * 2).max(8)),
        circuit: Circuit::new(
            Backoff::new(
                Duration::from_secs(5),
                Duration::from_secs(300),
                Jitter::Spread,
            ),
            Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                Jitter::Spread,
            ),
        ),
    };
    let sweep = SweepTrigger::default();
    let receipts_worker = start_operations(&config, &shared, &shutdown)?;
    log_start(&config);
    let running = start_delivery(&config, &shared, twilio, &sweep, &shutdown, receipts_worker)?;

    smol::block_on(realtime::run(realtime::Context {
        subscription,
        supabase: config.supabase.clone(),
        timing: Timing::with_heartbeat(config.heartbeat),
        sink: Arc::new(Wakeups {
            ownership: shared.ownership.clone(),
            health: shared.health.clone(),
            queue: shared.queue.clone(),
            sweep,
            metrics: shared.metrics.clone(),
        }),
        shutdown: shutdown.clone(),
        liveness: shared.liveness.clone(),
        tls,
    }));

    // Only shutdown ends the Realtime task.
    wind_down(&shared, running);
    Ok(())
}

/// How many times the start asks the database whether scaled mode is installed.
const DETECT_ATTEMPTS: u32 = 3;

/// Scaled mode when the database has its migration (docs/scaled-mode.md), else the default
/// mode. A database that cannot say within a few tries gets the default mode, which is correct
/// alongside scaled instances (claims are atomic), only dearer.
fn detect_mode(rest: &Rest, shutdown: &Shutdown) -> (Ownership, Subscription) {
    for attempt in 1..=DETECT_ATTEMPTS {
        match rest.scaled_mode() {
            Ok(Some(mode)) => {
                let me = format!("{:016x}", fastrand::u64(..));
                info!(
                    "scaled mode: {} partitions, wake-ups by Broadcast, membership by Presence \
                     (this instance is {me})",
                    mode.partitions
                );
                let subscription = Subscription::Partitions {
                    partitions: mode.partitions,
                    me,
                    observe_only: false,
                };
                return (Ownership::scaled(mode.partitions), subscription);
            }
            Ok(None) => break,
            Err(e) => {
                warn!("cannot tell whether scaled mode is installed (attempt {attempt}/{DETECT_ATTEMPTS}): {e}");
                if attempt < DETECT_ATTEMPTS && !shutdown.sleep(Duration::from_secs(1)) {
                    break;
                }
                if attempt == DETECT_ATTEMPTS {
                    warn!("running in the default mode until restarted");
                }
            }
        }
    }
    (Ownership::default_mode(), Subscription::Changes)
}

/// Start what operators see: the receipts worker (when receipts are on), the HTTP port, and the
/// systemd notifier (under a `Type=notify` unit). Returns the receipts worker.
fn start_operations(
    config: &Config,
    shared: &Shared,
    shutdown: &Shutdown,
) -> Result<Option<JoinHandle<()>>, StartError> {
    let mut receipts_worker = None;
    let receipts = match &config.status_callback_url {
        Some(url) => {
            let (inbox, worker) = receipts::spawn(shared.rest.clone(), shutdown.clone())
                .map_err(thread("the receipts worker"))?;
            receipts_worker = Some(worker);
            Some(Receipts {
                url: url.clone(),
                auth_token: config.twilio.auth_token.clone(),
                inbox: Arc::new(inbox),
            })
        }
        None => None,
    };
    server::serve(
        config.port,
        Admin {
            health: shared.health.clone(),
            liveness: shared.liveness.clone(),
            metrics: shared.metrics.clone(),
            work: Box::new(DeliveryGauges {
                queue: shared.queue.clone(),
                circuit: shared.circuit.clone(),
            }),
            receipts,
        },
    )
    .map_err(|error| StartError::Port {
        port: config.port,
        error,
    })?;
    start_systemd(shared, shutdown)?;
    Ok(receipts_worker)
}

/// Start the systemd notifier when the service runs under a `Type=notify` unit.
fn start_systemd(shared: &Shared, shutdown: &Shutdown) -> Result<(), StartError> {
    let Some((notifier, watchdog)) = systemd::from_environment() else {
        return Ok(());
    };
    let (queue, liveness) = (shared.queue.clone(), shared.liveness.clone());
    systemd::spawn(systemd::Watch {
        notifier,
        health: shared.health.clone(),
        watchdog,
        stalled: Box::new(move || {
            let state = QueueState {
                waiting: queue.len(),
                full: queue.is_full(),
            };
            liveness
                .stalled(state, Instant::now())
                .into_iter()
                .map(|l| l.name())
                .collect()
        }),
        shutdown: shutdown.clone(),
    })
    .map_err(thread("the systemd notifier"))
}

/// The start line: version, threads, retries, sender, rate limit, port.
fn log_start(config: &Config) {
    info!(
        "sms-sender {} starting: up to {} sender threads (on demand), up to {} retries, from {}, {}, health on :{}",
        env!("CARGO_PKG_VERSION"),
        config.sender_threads,
        config.max_retries,
        match &config.twilio.sender {
            SmsSender::Number(n) => phone::mask(n),
            SmsSender::MessagingService(sid) => format!("messaging service {sid}"),
        },
        config
            .max_sends_per_second
            .map_or("no rate limit".to_string(), |r| format!(
                "at most {r} sends/s"
            )),
        config.port
    );
}

/// Start the sender threads, the orphan checker, the unrecorded-sends retrier and the sweeper.
fn start_delivery(
    config: &Config,
    shared: &Shared,
    twilio: Twilio,
    sweep: &SweepTrigger,
    shutdown: &Shutdown,
    receipts_worker: Option<JoinHandle<()>>,
) -> Result<Running, StartError> {
    let in_flight = InFlight::default();
    let unrecorded = Unrecorded::new(shared.metrics.clone());
    let senders = start_senders(config, shared, &twilio, &in_flight, &unrecorded, shutdown)?;
    // The orphan checker, the sweeper, the HTTP server and the signal watcher are deliberately
    // detached: none holds a claim (the checker's writes are fenced and each complete on its own),
    // so the process may end under them. The sender threads and the receipts worker are waited
    // for at shutdown, within the deadline.
    orphans::spawn(OrphanCheck {
        rest: shared.rest.clone(),
        twilio,
        in_flight: in_flight.clone(),
        sending_timeout: config.sending_timeout,
        settle: config.reconcile_settle,
        interval: config.orphan_check,
        shutdown: shutdown.clone(),
        metrics: shared.metrics.clone(),
        unrecorded: unrecorded.clone(),
        ownership: shared.ownership.clone(),
    })
    .map_err(thread("the orphan checker"))?;
    unrecorded::spawn(unrecorded.clone(), shared.rest.clone(), shutdown.clone())
        .map_err(thread("the unrecorded-sends retrier"))?;
    start_sweeper(config, shared, sweep, shutdown)?;
    Ok(Running {
        senders,
        in_flight,
        unrecorded,
        receipts_worker,
    })
}

/// The pipeline every sender thread runs, and the pool of those threads.
fn start_senders(
    config: &Config,
    shared: &Shared,
    twilio: &Twilio,
    in_flight: &InFlight,
    unrecorded: &Unrecorded,
    shutdown: &Shutdown,
) -> Result<Arc<SenderPool>, StartError> {
    let limiter = Limiter::new(config.sender_threads);
    shared.metrics.set_concurrency_limit(limiter.limit());
    let pipeline = Arc::new(Pipeline {
        rest: shared.rest.clone(),
        twilio: twilio.clone(),
        circuit: shared.circuit.clone(),
        shutdown: shutdown.clone(),
        max_retries: config.max_retries,
        retry_backoff: Backoff::new(config.retry_backoff, Duration::from_secs(60), Jitter::None),
        persist_backoff: sender::persist_backoff(),
        request_budget: config.http_timeout + clients::connect_timeout(config),
        sending_timeout: config.sending_timeout,
        settle: config.reconcile_settle,
        in_flight: in_flight.clone(),
        metrics: shared.metrics.clone(),
        pacer: Pacer::new(config.max_sends_per_second),
        limiter,
        unrecorded: unrecorded.clone(),
        queue: shared.queue.clone(),
        ownership: shared.ownership.clone(),
    });
    SenderPool::start(
        config.sender_threads,
        pipeline,
        shared.queue.clone(),
        shared.liveness.clone(),
    )
    .map_err(thread("the sender threads"))
}

/// The catch-up sweeper, run on `sweep`'s requests and every `SWEEP_INTERVAL`.
fn start_sweeper(
    config: &Config,
    shared: &Shared,
    sweep: &SweepTrigger,
    shutdown: &Shutdown,
) -> Result<(), StartError> {
    sweep::spawn(Sweeper {
        rest: shared.rest.clone(),
        queue: shared.queue.clone(),
        trigger: sweep.clone(),
        shutdown: shutdown.clone(),
        page_size: SWEEP_PAGE,
        // Capped low: while REST is down this retry is what notices the recovery.
        backoff: Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            Jitter::Spread,
        ),
        interval: config.sweep_interval,
        rest_failing: shared.health.database_status(),
        metrics: shared.metrics.clone(),
        liveness: shared.liveness.clone(),
        ownership: shared.ownership.clone(),
    })
    .map(drop)
    .map_err(thread("the catch-up sweeper"))
}

/// After the Realtime task returned: health turns `shutting_down`, the queue closes, senders
/// finish within [`SHUTDOWN_DEADLINE`] or their claims are handed over within
/// [`HAND_OVER_TIME`]; the receipts worker gets what is left of the deadline.
fn wind_down(shared: &Shared, running: Running) {
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    shared.health.set_shutting_down();
    let abandoned = shared.queue.waiting_ids();
    shared.queue.close();
    info!("shutting down: {abandoned} queued id(s) left for the next instance; waiting for in-flight sends");
    if !running.senders.wait_finished(deadline) {
        warn!("shutdown deadline reached with sends still in flight; handing them over");
        handover::hand_over_all(
            &running.in_flight,
            &shared.rest,
            &shared.metrics,
            deadline + HAND_OVER_TIME,
        );
        running.unrecorded.report();
        return;
    }
    running.unrecorded.report();
    // The receipts worker reports what it could not apply before the process ends.
    if let Some(worker) = running.receipts_worker {
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    info!("shutdown complete");
}
