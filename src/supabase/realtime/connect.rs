//! Opening the Realtime socket: TCP, TLS for `wss://` on the shared connector, then the
//! WebSocket upgrade with the key as `apikey`, and what a refused upgrade means.
//!
//! Invariants: the service key goes only into the upgrade URL, never into an error or a log
//! line — every error that may quote the URL, and every body a refusing server sends, goes
//! through [`redact::scrub`]; a refusal that retrying soon would not change (unreachable, or a
//! 4xx other than 429) is marked decisive.

use std::time::Duration;

use async_tungstenite::tungstenite;
use futures_lite::future::or;
use smol::Timer;

use super::{tls, Context};
use crate::redact;

/// A byte stream the socket runs on: plain TCP (`ws://`) or TLS over TCP (`wss://`).
pub(super) trait Io: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send> Io for T {}

/// The Realtime WebSocket.
pub(super) type Ws = async_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Why connecting failed.
pub(super) struct Failure {
    pub(super) reason: String,
    /// The server is unreachable or refused the upgrade with a 4xx other than 429.
    pub(super) decisive: bool,
}

impl From<TimedOut> for Failure {
    fn from(timed_out: TimedOut) -> Failure {
        Failure {
            reason: timed_out.to_string(),
            decisive: false,
        }
    }
}

/// A wait ran past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimedOut(pub(super) Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out after {} ms", self.0.as_millis())
    }
}

/// `fut`, or [`TimedOut`] once `limit` has passed.
pub(super) async fn with_timeout<T, E: From<TimedOut>>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    or(fut, async {
        Timer::after(limit).await;
        Err(TimedOut(limit).into())
    })
    .await
}

/// A Realtime URL that is not one we can connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EndpointError {
    /// Neither `ws://` nor `wss://`.
    NotWebSocket(String),
    /// The port (of this authority) is not a number.
    BadPort(String),
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointError::NotWebSocket(url) => write!(f, "not a WebSocket URL: {url}"),
            EndpointError::BadPort(authority) => write!(f, "bad port in {authority}"),
        }
    }
}

/// Host, port and TLS flag of a `ws://` or `wss://` URL we built ourselves from a checked base.
pub(super) fn endpoint(url: &str) -> Result<(String, u16, bool), EndpointError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(EndpointError::NotWebSocket(url.to_string()));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse()
                .map_err(|_| EndpointError::BadPort(authority.to_string()))?,
        ),
        _ => (authority, default_port),
    };
    Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
}

/// A failure no retry soon would change: the server cannot be reached at all.
fn unreachable(reason: String) -> Failure {
    Failure {
        reason,
        decisive: true,
    }
}

/// TCP to the Realtime host, and TLS over it for `wss://`.
async fn open_stream(ctx: &Context) -> Result<Box<dyn Io>, Failure> {
    let (host, port, tls) =
        endpoint(&ctx.supabase.realtime_url).map_err(|e| unreachable(e.to_string()))?;
    let tcp = smol::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(tcp));
    }
    let connector = ctx
        .tls
        .as_deref()
        .ok_or_else(|| unreachable(format!("no TLS connector for {host}")))?;
    let tls = tls::connect(connector, host.as_str(), tcp)
        .await
        .map_err(|e| unreachable(redact::scrub(&format!("TLS with {host} failed: {e}"))))?;
    Ok(Box::new(tls))
}

/// Open the socket: TCP, TLS for `wss`, then the WebSocket upgrade with the key as `apikey`.
pub(super) async fn connect(ctx: &Context) -> Result<Ws, Failure> {
    let stream = open_stream(ctx).await?;
    let url = format!(
        "{}?apikey={}&vsn=1.0.0",
        ctx.supabase.realtime_url,
        ctx.supabase.key.expose()
    );
    match async_tungstenite::client_async(url.as_str(), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let status = resp.status().as_u16();
            let reason = refusal_reason(&body);
            Err(Failure {
                reason: format!("upgrade refused with HTTP {status}: {reason}"),
                // A wrong key (401), a suspended project (403), a wrong URL (404): retrying
                // soon changes nothing. Limits (429) and server errors pass.
                decisive: (400..500).contains(&status) && status != 429,
            })
        }
        // The error may quote the URL, which carries the key.
        Err(e) => Err(Failure {
            reason: redact::scrub(&format!("WebSocket handshake failed: {e}")),
            decisive: false,
        }),
    }
}

/// What a refused upgrade's body says, scrubbed: its JSON `error` or `message` when it has one,
/// else the body itself (an HTML page, a proxy's `Cannot GET /realtime/v1/websocket?apikey=…`).
/// The whole body is scrubbed before anything is cut, so no part of a key is left at the cut.
fn refusal_reason(body: &str) -> String {
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(String::from)
        });
    redact::scrub(said.as_deref().unwrap_or(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("wss://abc.supabase.co/realtime/v1/websocket").unwrap(),
            ("abc.supabase.co".into(), 443, true)
        );
        assert_eq!(
            endpoint("ws://127.0.0.1:54321/realtime/v1/websocket").unwrap(),
            ("127.0.0.1".into(), 54321, false)
        );
        assert!(endpoint("http://x").is_err());
    }

    #[test]
    fn timeouts_say_how_long_they_waited() {
        assert_eq!(
            TimedOut(Duration::from_secs(10)).to_string(),
            "timed out after 10000 ms"
        );
    }
}
