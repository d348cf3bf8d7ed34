//! One socket's thread: it owns the WebSocket, reads with a short timeout, answers heartbeats
//! and dispatches client frames, fires its timers, drains the outbound queue, and closes on the
//! idle timeout (1000) or an oversized frame (1009).

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::super::Shared;
use super::frame::{close_like_frame, ClientFrame, ServerFrame};
use super::{Conn, Out};

/// How long a socket thread blocks in a read before looking at its queue and timers: it bounds
/// the latency the double adds to every pushed frame (events wait in the queue for it).
pub(super) const READ_TICK: Duration = Duration::from_millis(2);

/// What a socket's timer does when due.
pub(super) enum TimerKind {
    /// Send this frame (a delayed join error).
    Frame(ServerFrame),
    /// The subscription outcome of a join is due.
    Subscribe {
        topic: String,
        generation: u64,
        problem: Option<String>,
        repeat: bool,
    },
}

/// Something a socket's thread does at `at`.
pub(super) struct Timer {
    pub(super) at: Instant,
    pub(super) kind: TimerKind,
}

/// The socket's thread state.
pub(super) struct Socket {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Arc<Conn>,
    pub(super) ws: WebSocket<TcpStream>,
    pub(super) rx: Receiver<Out>,
    pub(super) timers: Vec<Timer>,
}

/// Why the socket loop ends.
pub(super) struct Closed;

impl Socket {
    /// The socket loop: queue, timers, idle timeout, one read; returns when the socket ends.
    pub(super) fn run(&mut self) {
        let mut last_inbound = Instant::now();
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.conn.vanished.load(Ordering::SeqCst) {
                self.run_vanished(last_inbound);
                return;
            }
            let blackhole = self.shared.rt.blackhole.load(Ordering::SeqCst);
            if self.drain_queue(blackhole).is_err() {
                return;
            }
            if !blackhole && self.fire_timers().is_err() {
                return;
            }
            if blackhole {
                // The idle clock stands still while blackholed, so lifting the switch does not
                // immediately time out a socket that kept sending.
                last_inbound = Instant::now();
            } else if last_inbound.elapsed() >= self.shared.config.idle_timeout {
                // Phoenix's transport timeout: close 1000 with an empty reason (§6.1).
                self.close(1000);
                return;
            }
            match self.ws.read() {
                Ok(msg) => {
                    last_inbound = Instant::now();
                    match msg {
                        Message::Text(text) if self.on_text(&text).is_err() => return,
                        Message::Text(_) => {}
                        Message::Close(_) => {
                            // tungstenite queued the close reply; flush it and finish.
                            let _ = self.ws.flush();
                            return;
                        }
                        // Pings are answered by tungstenite; binary frames are only for
                        // broadcast features (§2.3), which this double does not offer.
                        _ => {}
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !blackhole {
                        let _ = self.ws.flush();
                    }
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    self.close(1009);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// A vanished socket: whatever the client sends is lost and nothing reaches it, until the
    /// idle timeout (counted from the last frame that did arrive) makes the server give the
    /// socket up. A TCP close from the client is lost too: the server still waits.
    fn run_vanished(&mut self, last_inbound: Instant) {
        let mut readable = true;
        while last_inbound.elapsed() < self.shared.config.idle_timeout {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            while let Ok(out) = self.rx.try_recv() {
                drop(out);
            }
            if !readable {
                std::thread::sleep(READ_TICK);
                continue;
            }
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => readable = false,
            }
        }
    }

    /// Write one frame (dropped while blackholed); counted once written.
    pub(super) fn send(&mut self, frame: &ServerFrame) -> Result<(), Closed> {
        if self.shared.rt.blackhole.load(Ordering::SeqCst)
            || self.conn.vanished.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        self.ws
            .send(Message::Text(frame.encode(self.conn.vsn)))
            .map_err(|_| Closed)?;
        self.shared.counters.sent(&frame.event);
        Ok(())
    }

    /// Send a close frame, wait briefly for the client's answer, and give up the socket.
    pub(super) fn close(&mut self, code: u16) {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }));
        let _ = self.ws.flush();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }

    fn drain_queue(&mut self, blackhole: bool) -> Result<(), Closed> {
        loop {
            match self.rx.try_recv() {
                Ok(Out::Frame(f)) => {
                    if !blackhole {
                        self.send(&f)?;
                    }
                }
                Ok(Out::Close(code)) => {
                    self.close(code);
                    return Err(Closed);
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(Closed),
            }
        }
    }

    fn fire_timers(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        let (due, rest): (Vec<Timer>, Vec<Timer>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|t| t.at <= now);
        self.timers = rest;
        for t in due {
            match t.kind {
                TimerKind::Frame(f) => self.send(&f)?,
                TimerKind::Subscribe {
                    topic,
                    generation,
                    problem,
                    repeat,
                } => self.subscribe_due(&topic, generation, problem, repeat)?,
            }
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        self.shared.rt.frames.lock().unwrap().push(
            parsed
                .clone()
                .unwrap_or_else(|| Value::String(text.to_string())),
        );
        if self.shared.rt.blackhole.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Malformed frames are dropped silently, with no reply and no close (§2.3).
        let Some(frame) = parsed.and_then(|v| ClientFrame::decode(self.conn.vsn, &v)) else {
            return Ok(());
        };
        self.shared.counters.received(&frame.event);
        match frame.event.as_str() {
            "heartbeat" if frame.topic == "phoenix" => {
                if self.shared.rt.heartbeat_replies.load(Ordering::SeqCst) {
                    self.send(&frame.reply("ok", json!({})))?;
                }
                Ok(())
            }
            "phx_join" => self.on_join(frame),
            "phx_leave" => {
                let removed = self.conn.channels.lock().unwrap().remove(&frame.topic);
                if let Some(ch) = &removed {
                    self.shared.rt.channel_gone(self.conn.id, &frame.topic, ch);
                }
                self.send(&frame.reply("ok", json!({})))?;
                if let Some(ch) = removed {
                    self.send(&close_like_frame(&frame.topic, &ch, "phx_close"))?;
                }
                Ok(())
            }
            _ if !self
                .conn
                .channels
                .lock()
                .unwrap()
                .contains_key(&frame.topic) =>
            {
                self.send(&frame.reply("error", json!({"reason": "unmatched topic"})))
            }
            "access_token" => self.on_access_token(frame),
            "presence" => self.on_presence(frame),
            // Client broadcasts and anything else on a joined topic: not modelled, no reply.
            _ => Ok(()),
        }
    }
}
