//! Waits on a watch that turns true once (draining, the forced close at the end of a drain),
//! registered once per connection, and a connection's work raced against one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::watch;

/// A wait on a watch that only ever turns true, once. The first poll registers the task's
/// waker; later polls only read the watch's value, a read lock. Polling a registered wait
/// again takes the watch's lock, and registering one (what `select!` on a fresh wait does)
/// takes a lock, a list insert and a removal: about 340 and 700 instructions per request on
/// a keep-alive connection. One registration is enough because the watch turns true once:
/// the wake it gives is the one that matters, and the wait is not polled again to register
/// anew. The wait is boxed (184 bytes), made at the first poll.
#[derive(Default)]
pub struct StopWatch {
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl StopWatch {
    /// Whether `stop` has turned true (or its sender is gone, at the first poll). The first
    /// call registers `cx`'s waker to be woken when it does.
    pub fn poll_stopped(&mut self, stop: &watch::Receiver<bool>, cx: &mut Context<'_>) -> bool {
        if self.wait.is_some() {
            return *stop.borrow();
        }
        let mut receiver = stop.clone();
        let wait = self
            .wait
            .insert(Box::pin(async move { super::stopped(&mut receiver).await }));
        wait.as_mut().poll(cx).is_ready()
    }
}

pin_project! {
    /// Runs `work` until it ends (`Some` of its output), or until the watch turns true
    /// (`None`): a connection's task and the forced close.
    ///
    /// A struct rather than an `async fn`: the function would keep `work` twice, as its
    /// argument and as the pinned local, and `work` is the connection's whole state. tokio
    /// rounds a task cell up to 128 bytes, so each byte here can cost a line per connection.
    pub struct UnlessStopped<F> {
        #[pin]
        work: F,
        value: watch::Receiver<bool>,
        stop: StopWatch,
    }
}

/// [`UnlessStopped`] for `work` and the watch `stop`.
pub fn unless_stopped<F: Future>(work: F, stop: watch::Receiver<bool>) -> UnlessStopped<F> {
    UnlessStopped {
        work,
        value: stop,
        stop: StopWatch::default(),
    }
}

impl<F: Future> Future for UnlessStopped<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.stop.poll_stopped(this.value, cx) {
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
