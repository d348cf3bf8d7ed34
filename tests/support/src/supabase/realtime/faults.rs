//! Server-side faults that end channels or sockets: abrupt drops, "Server requested
//! disconnect" with close 1012, `phx_error` on every channel, expired tokens, and vanishing
//! sockets (black-holed links only the idle timeout detects). The switches that only change
//! behaviour (blackhole, dropped or duplicated events or broadcasts…) are flags read where they
//! act.

use std::net::Shutdown;
use std::sync::atomic::Ordering;

use super::super::RealtimeSocket;

use super::channel::Channel;
use super::frame::{close_like_frame, system_frame, ServerFrame};
use super::{Out, RealtimeState};

impl RealtimeState {
    /// The open sockets: their topics and tracked presence keys.
    pub(crate) fn sockets(&self) -> Vec<RealtimeSocket> {
        let mut out: Vec<RealtimeSocket> = self
            .snapshot()
            .iter()
            .map(|c| {
                let mut topics: Vec<String> = c.channels.lock().unwrap().keys().cloned().collect();
                topics.sort();
                RealtimeSocket {
                    id: c.id,
                    topics,
                    presence_keys: self.presence.lock().unwrap().keys_of(c.id),
                    vanished: c.vanished.load(Ordering::SeqCst),
                }
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Black-hole one socket (see [`super::Conn::vanished`]); false if it is not open.
    pub(crate) fn vanish(&self, id: u64) -> bool {
        match self.conns.lock().unwrap().get(&id) {
            Some(c) => {
                c.vanished.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Black-hole every socket that tracks the presence `key`; how many.
    pub(crate) fn vanish_presence_key(&self, key: &str) -> usize {
        let ids: Vec<u64> = self
            .sockets()
            .into_iter()
            .filter(|s| s.presence_keys.iter().any(|k| k == key))
            .map(|s| s.id)
            .collect();
        ids.into_iter().filter(|id| self.vanish(*id)).count()
    }

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
            let ended: Vec<(String, Channel)> = c.channels.lock().unwrap().drain().collect();
            for (topic, ch) in &ended {
                for f in frames(topic, ch) {
                    let _ = c.tx.send(Out::Frame(f));
                }
            }
            if let Some(code) = close_code {
                let _ = c.tx.send(Out::Close(code));
            }
            for (topic, ch) in &ended {
                self.channel_gone(c.id, topic, ch);
            }
        }
    }
}
