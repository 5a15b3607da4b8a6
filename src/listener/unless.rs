//! A connection's work raced against a stop signal (the forced close at the end of a drain).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::watch;

pin_project! {
    /// Runs `work` until it ends (`Some` of its output), or until the watch turns true
    /// (`None`).
    ///
    /// The wait on the watch is registered once, with the task's waker; after that each poll
    /// only reads the watch's value. Polling a registered wait again takes its lock, and
    /// `select!` polls every branch at each of the two or three wakeups of a request: about
    /// 340 instructions per request on a keep-alive connection. One registration is enough
    /// because the watch only ever turns true, once: the wake it gives is the one that
    /// matters, and the wait is not polled again to register anew.
    ///
    /// A struct rather than an `async fn`: the function would keep `work` twice, as its
    /// argument and as the pinned local, and `work` is the connection's whole state. The
    /// wait is boxed: inline, it made the connection's task cell (rounded up to 128 bytes)
    /// one line longer, or more, for every open connection.
    pub struct UnlessStopped<F> {
        #[pin]
        work: F,
        wait: Pin<Box<dyn Future<Output = ()> + Send>>,
        value: watch::Receiver<bool>,
        registered: bool,
    }
}

/// [`UnlessStopped`] for `work` and the watch `stop`.
pub fn unless_stopped<F: Future>(work: F, stop: watch::Receiver<bool>) -> UnlessStopped<F> {
    let value = stop.clone();
    UnlessStopped {
        work,
        wait: Box::pin(async move {
            let mut stop = stop;
            super::stopped(&mut stop).await
        }),
        value,
        registered: false,
    }
}

impl<F: Future> Future for UnlessStopped<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let stopped = if *this.registered {
            *this.value.borrow()
        } else {
            *this.registered = true;
            this.wait.as_mut().poll(cx).is_ready()
        };
        if stopped {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test]
    async fn work_that_ends_first_gives_its_output() {
        let (_stop, rx) = watch::channel(false);
        assert_eq!(unless_stopped(async { 7 }, rx).await, Some(7));
    }

    #[tokio::test]
    async fn a_stop_after_registration_ends_pending_work() {
        let (stop, rx) = watch::channel(false);
        let mut work = Box::pin(unless_stopped(std::future::pending::<()>(), rx));
        // The first poll registers the wait; the next reads the value.
        let once = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        assert_eq!(once, Poll::Pending);
        let once = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        assert_eq!(once, Poll::Pending);
        stop.send(true).unwrap();
        let once = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        assert_eq!(once, Poll::Ready(None));
    }

    #[tokio::test]
    async fn an_earlier_stop_ends_work_at_the_first_poll() {
        let (stop, rx) = watch::channel(false);
        stop.send(true).unwrap();
        assert_eq!(unless_stopped(std::future::pending::<()>(), rx).await, None);
    }
}
