//! Resolve SIGTERM and SIGINT into the service's [`Shutdown`].
//!
//! Cloud Run sends SIGTERM, then SIGKILL 10 s later; we aim to be done in 8 s. The first signal
//! starts a graceful shutdown; a second one exits at once (the operator means it).

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::shutdown::Shutdown;

/// Start the thread that watches for the signals.
pub fn spawn(shutdown: Shutdown) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    crate::sync::spawn_named("signals", 64 * 1024, move || {
        let mut seen = 0;
        for signal in signals.forever() {
            let name = if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            };
            seen += 1;
            if seen == 1 {
                info!("{name} received: finishing in-flight sends (again to exit at once)");
                shutdown.trigger();
            } else {
                warn!("second {name}: exiting now");
                std::process::exit(128 + signal);
            }
        }
    })?;
    Ok(())
}
