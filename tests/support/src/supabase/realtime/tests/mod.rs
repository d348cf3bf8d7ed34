//! The Realtime double's own tests, black-box over real WebSockets, one file per concern.

use std::time::Duration;

mod broadcast;
mod changes;
mod channels;
mod faults;
mod handshake;
mod presence;
mod scaled_mode;

/// How long a test waits for an expected frame.
const T: Duration = Duration::from_secs(5);
