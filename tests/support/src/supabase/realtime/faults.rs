//! Server-side faults that end channels or sockets: abrupt drops, "Server requested
//! disconnect" with close 1012, `phx_error` on every channel, expired tokens. The switches that
//! only change behaviour (blackhole, dropped or duplicated events…) are flags read where they act.

use std::net::Shutdown;

use super::channel::Channel;
use super::frame::{close_like_frame, system_frame, ServerFrame};
use super::{Out, RealtimeState};

impl RealtimeState {
    /// Abrupt TCP drop of every socket (no close frame).
    pub(crate) fn drop_all(&self) {
        for c in self.snapshot() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// `system` "Server requested disconnect" on every joined topic, then close 1012 (§6.5).
    pub(crate) fn server_disconnect(&self) {
        self.end_all_channels(
            |topic, ch| {
                vec![system_frame(
                    topic,
                    ch,
                    "system",
                    "ok",
                    "Server requested disconnect",
                )]
            },
            Some(1012),
        );
    }

    /// `phx_error` on every joined channel; the sockets stay.
    pub(crate) fn phx_error_all(&self) {
        self.end_all_channels(
            |topic, ch| vec![close_like_frame(topic, ch, "phx_error")],
            None,
        );
    }

    /// `system` error "Token has expired 0 seconds ago", then `phx_close`, on every joined
    /// channel (§6.4); the sockets stay.
    pub(crate) fn expire_tokens(&self) {
        self.end_all_channels(
            |topic, ch| {
                vec![
                    system_frame(
                        topic,
                        ch,
                        "system",
                        "error",
                        "Token has expired 0 seconds ago",
                    ),
                    close_like_frame(topic, ch, "phx_close"),
                ]
            },
            None,
        );
    }

    /// Remove every joined channel of every socket, queueing `frames(topic, channel)` for each
    /// one, then a close with `close_code` if given.
    fn end_all_channels(
        &self,
        frames: impl Fn(&str, &Channel) -> Vec<ServerFrame>,
        close_code: Option<u16>,
    ) {
        for c in self.snapshot() {
            let mut chans = c.channels.lock().unwrap();
            for (topic, ch) in chans.drain() {
                for f in frames(&topic, &ch) {
                    let _ = c.tx.send(Out::Frame(f));
                }
            }
            if let Some(code) = close_code {
                let _ = c.tx.send(Out::Close(code));
            }
        }
    }
}
