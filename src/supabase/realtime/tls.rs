//! TLS for the Realtime socket, on the one `native_tls::TlsConnector` the whole service shares
//! (built once in [`crate::clients::build`], so the CA bundle is parsed once for REST, Twilio
//! and Realtime alike, and a reconnect parses nothing).
//!
//! `async-native-tls` cannot take an existing connector (its public connector rebuilds one, CA
//! bundle included, on every connect), so this module drives native-tls itself: the blocking
//! `Read`/`Write` calls native-tls makes are answered by polling the async socket with the
//! waker of the task that is polling us, and a `Pending` there is reported to native-tls as
//! `WouldBlock`, which it hands back to us as "not yet" (handshake) or an `io` error of that kind
//! (reads and writes), which we turn back into `Pending`. The socket's own poll has registered
//! the waker by then, so the task is woken when the socket is ready.
//!
//! Invariants: certificates and host names are verified exactly as for the HTTP clients (the
//! same connector); no `unsafe` (the waker is kept as a clone, not as a pointer to the context).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::io::{AsyncRead, AsyncWrite};
use native_tls::{HandshakeError, TlsConnector};

/// An async stream seen as a blocking one by native-tls, for the task whose waker it holds.
#[derive(Debug)]
struct Polled<S> {
    inner: S,
    waker: Waker,
}

impl<S> Polled<S> {
    /// Answer on behalf of the task behind `cx` from now on.
    fn set_waker(&mut self, cx: &Context<'_>) {
        if !self.waker.will_wake(cx.waker()) {
            self.waker = cx.waker().clone();
        }
    }

    fn poll<T>(
        &mut self,
        f: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T>
    where
        S: Unpin,
    {
        let mut cx = Context::from_waker(&self.waker);
        match f(Pin::new(&mut self.inner), &mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> Read for Polled<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|s, cx| s.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> Write for Polled<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|s, cx| s.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|s, cx| s.poll_flush(cx))
    }
}

/// A TLS session over an async stream.
#[derive(Debug)]
pub struct TlsStream<S> {
    tls: native_tls::TlsStream<Polled<S>>,
    /// `close_notify` was sent (or could not be): only the socket is left to close.
    shut: bool,
}

/// `Pending` for `WouldBlock` (the socket's poll registered the waker), else the result.
fn ready<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

/// TLS handshake with `domain` (a host name or an IP address, verified against the certificate)
/// over `stream`, with `connector`.
pub async fn connect<S>(
    connector: &TlsConnector,
    domain: &str,
    stream: S,
) -> Result<TlsStream<S>, native_tls::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = Some(stream);
    let mut mid: Option<native_tls::MidHandshakeTlsStream<Polled<S>>> = None;
    futures_lite::future::poll_fn(move |cx| {
        let step = match (mid.take(), stream.take()) {
            (Some(mut m), _) => {
                m.get_mut().set_waker(cx);
                m.handshake()
            }
            (None, Some(inner)) => connector.connect(
                domain,
                Polled {
                    inner,
                    waker: cx.waker().clone(),
                },
            ),
            (None, None) => unreachable!("polled after the handshake ended"),
        };
        match step {
            Ok(tls) => Poll::Ready(Ok(TlsStream { tls, shut: false })),
            Err(HandshakeError::WouldBlock(m)) => {
                mid = Some(m);
                Poll::Pending
            }
            Err(HandshakeError::Failure(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.tls.get_mut().set_waker(cx);
        ready(this.tls.read(buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.tls.get_mut().set_waker(cx);
        ready(this.tls.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.get_mut().set_waker(cx);
        ready(this.tls.flush())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.get_mut().set_waker(cx);
        if !this.shut {
            match this.tls.shutdown() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                // A peer that is gone cannot be told; the socket is closed all the same.
                _ => this.shut = true,
            }
        }
        Pin::new(&mut this.tls.get_mut().inner).poll_close(cx)
    }
}
