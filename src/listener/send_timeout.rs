//! A client connection whose writes must make progress: a client that stops reading is
//! cut after `server.send_timeout` instead of holding its stream (and the upstream's
//! generation) forever. Reads pass through untouched, and the timer is armed only while a
//! write is blocked, so a client that keeps up costs nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// `T` with a bound on how long a write may stay blocked.
    pub struct SendTimeout<T> {
        #[pin]
        inner: T,
        timeout: Option<Duration>,
        // Armed when a write first blocks; cleared when one makes progress.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<T> SendTimeout<T> {
    /// `None` turns the bound off.
    pub fn new(inner: T, timeout: Option<Duration>) -> Self {
        SendTimeout {
            inner,
            timeout,
            sleep: None,
        }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

/// What a blocked write does: wait, or fail once the deadline has passed.
fn blocked<T>(
    timeout: Option<Duration>,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    let Some(timeout) = timeout else {
        return Poll::Pending;
    };
    let sleep =
        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<T: AsyncWrite> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.inner.poll_write(cx, buf) {
            Poll::Pending => blocked(*this.timeout, this.sleep, cx),
            ready => {
                *this.sleep = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.inner.poll_write_vectored(cx, bufs) {
            Poll::Pending => blocked(*this.timeout, this.sleep, cx),
            ready => {
                *this.sleep = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        match this.inner.poll_flush(cx) {
            Poll::Pending => blocked(*this.timeout, this.sleep, cx),
            ready => {
                *this.sleep = None;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl<T: AsyncRead> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}
