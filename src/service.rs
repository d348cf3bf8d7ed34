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
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::backoff::Backoff;
use crate::config::{Config, SmsSender};
use crate::delivery::circuit::Circuit;
use crate::delivery::concurrency::Limiter;
use crate::delivery::handover;
use crate::delivery::in_flight::InFlight;
use crate::delivery::orphans::{self, OrphanCheck};
use crate::delivery::pacer::Pacer;
use crate::delivery::pool::SenderPool;
use crate::delivery::queue::WorkQueue;
use crate::delivery::sender::{self, Pipeline};
use crate::delivery::sweep::{self, SweepTrigger, Sweeper};
use crate::delivery::unrecorded::{self, Unrecorded};
use crate::ops::health::Health;
use crate::ops::liveness::{Liveness, QueueState};
use crate::ops::metrics::Metrics;
use crate::ops::server::{self, Admin, Receipts};
use crate::ops::systemd;
use crate::shutdown::Shutdown;
use crate::supabase::realtime::{self, Timing};
use crate::supabase::rest::Rest;
use crate::twilio::client::Twilio;
use crate::twilio::receipts;
use crate::{http, phone};

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

/// The clients every part shares, built from the configuration.
pub struct Clients {
    /// Supabase REST.
    pub rest: Rest,
    /// Twilio.
    pub twilio: Twilio,
    /// The one TLS connector (and so the one parsed CA bundle) of every connection — REST,
    /// Twilio and Realtime; `None` when no URL needs TLS.
    pub tls: Option<Arc<native_tls::TlsConnector>>,
}

/// The limit of connecting (and of resolving the host name) for every HTTP client.
pub fn connect_timeout(config: &Config) -> Duration {
    config.http_timeout.min(crate::config::CONNECT_TIMEOUT_MAX)
}

/// Build the REST and Twilio clients and the TLS connector they share with Realtime (no network
/// use). The connector is built once, and only when some URL is `https://` or `wss://`.
pub fn clients(
    config: &Config,
    health: &Health,
    metrics: Arc<Metrics>,
) -> Result<Clients, StartError> {
    let connect_timeout = connect_timeout(config);
    let https = [&config.supabase.rest_url, &config.twilio.api_url]
        .iter()
        .any(|url| url.starts_with("https://"))
        || config.supabase.realtime_url.starts_with("wss://");
    let tls = if https {
        Some(http::tls_connector().map_err(StartError::Tls)?)
    } else {
        None
    };
    let rest = Rest::new(
        &config.supabase,
        config.sender_threads + 4,
        connect_timeout,
        config.http_timeout,
        tls.clone(),
        health.database_status(),
    );
    let agent = http::Agent::new(
        connect_timeout,
        config.http_timeout,
        config.sender_threads + 1,
        tls.clone(),
    );
    let twilio = Twilio::new(
        &config.twilio,
        agent,
        config.status_callback_url.as_deref(),
        metrics,
    );
    Ok(Clients { rest, twilio, tls })
}

/// Run the service until `shutdown` fires (`main` connects it to SIGTERM and SIGINT).
pub fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let health = Health::new();
    let metrics = Arc::new(Metrics::default());
    let Clients { rest, twilio, tls } = clients(&config, &health, metrics.clone())?;
    let queue = WorkQueue::new((config.sender_threads * 2).max(8));
    let sweep = SweepTrigger::default();
    let circuit = Circuit::new(
        Backoff::new(Duration::from_secs(5), Duration::from_secs(300), true),
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30), true),
    );

    let mut receipts_worker = None;
    let receipts = match &config.status_callback_url {
        Some(url) => {
            let (inbox, worker) = receipts::spawn(rest.clone(), metrics.clone(), shutdown.clone())
                .map_err(thread("the receipts worker"))?;
            receipts_worker = Some(worker);
            Some(Receipts {
                url: url.clone(),
                auth_token: config.twilio.auth_token.clone(),
                inbox,
            })
        }
        None => None,
    };
    let liveness = Liveness::new(config.liveness_window);
    server::serve(
        config.port,
        Admin {
            health: health.clone(),
            liveness: liveness.clone(),
            metrics: metrics.clone(),
            queue: queue.clone(),
            circuit: circuit.clone(),
            receipts,
        },
    )
    .map_err(|error| StartError::Port {
        port: config.port,
        error,
    })?;

    if let Some((notifier, watchdog)) = systemd::from_environment() {
        let (queue, liveness) = (queue.clone(), liveness.clone());
        systemd::spawn(systemd::Watch {
            notifier,
            health: health.clone(),
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
        .map_err(thread("the systemd notifier"))?;
    }

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

    let in_flight = InFlight::default();
    let unrecorded = Unrecorded::new(metrics.clone());
    let limiter = Limiter::new(config.sender_threads);
    metrics.set_concurrency_limit(limiter.limit());
    let pipeline = Arc::new(Pipeline {
        rest: rest.clone(),
        twilio: twilio.clone(),
        circuit,
        shutdown: shutdown.clone(),
        max_retries: config.max_retries,
        retry_backoff: Backoff::new(config.retry_backoff, Duration::from_secs(60), false),
        persist_backoff: sender::persist_backoff(),
        request_budget: config.http_timeout + connect_timeout(&config),
        sending_timeout: config.sending_timeout,
        settle: config.reconcile_settle,
        in_flight: in_flight.clone(),
        metrics: metrics.clone(),
        pacer: Pacer::new(config.max_sends_per_second),
        limiter,
        unrecorded: unrecorded.clone(),
    });
    let senders = SenderPool::start(
        config.sender_threads,
        pipeline,
        queue.clone(),
        liveness.clone(),
    )
    .map_err(thread("the sender threads"))?;
    // The orphan checker, the sweeper, the HTTP server and the signal watcher are deliberately
    // detached: none holds a claim (the checker's writes are fenced and each complete on its own),
    // so the process may end under them. The sender threads and the receipts worker are waited
    // for at shutdown, within the deadline.
    orphans::spawn(OrphanCheck {
        rest: rest.clone(),
        twilio,
        in_flight: in_flight.clone(),
        sending_timeout: config.sending_timeout,
        settle: config.reconcile_settle,
        interval: config.orphan_check,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        unrecorded: unrecorded.clone(),
    })
    .map_err(thread("the orphan checker"))?;
    unrecorded::spawn(unrecorded.clone(), rest.clone(), shutdown.clone())
        .map_err(thread("the unrecorded-sends retrier"))?;
    sweep::spawn(Sweeper {
        rest: rest.clone(),
        queue: queue.clone(),
        trigger: sweep.clone(),
        shutdown: shutdown.clone(),
        page_size: SWEEP_PAGE,
        // Capped low: while REST is down this retry is what notices the recovery.
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(5), true),
        interval: config.sweep_interval,
        rest_failing: health.database_status(),
        metrics: metrics.clone(),
        liveness: liveness.clone(),
    })
    .map_err(thread("the catch-up sweeper"))?;

    smol::block_on(realtime::run(realtime::Context {
        supabase: config.supabase.clone(),
        timing: Timing::with_heartbeat(config.heartbeat),
        health: health.clone(),
        queue: queue.clone(),
        sweep,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        liveness: liveness.clone(),
        tls,
    }));

    // Only shutdown ends the Realtime task.
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    health.set_shutting_down();
    let abandoned = queue.len();
    queue.close();
    info!("shutting down: {abandoned} queued id(s) left for the next instance; waiting for in-flight sends");
    if !senders.wait_finished(deadline) {
        warn!("shutdown deadline reached with sends still in flight; handing them over");
        handover::hand_over_all(&in_flight, &rest, &metrics, deadline + HAND_OVER_TIME);
        unrecorded.report();
        return Ok(());
    }
    unrecorded.report();
    // The receipts worker reports what it could not apply before the process ends.
    if let Some(worker) = receipts_worker {
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    info!("shutdown complete");
    Ok(())
}
