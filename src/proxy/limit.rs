//! The request-body size limit, enforced while the body streams.
//!
//! A declared `Content-Length` above the limit is refused before anything is forwarded. A
//! chunked body is counted as it passes; crossing the limit fails the body with
//! [`BodyTooLarge`], which the upstream client reports so that the client gets 413.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::BoxError;

/// A failure to read the client's body (it went away, or sent broken chunked framing),
/// kept apart from upstream failures so the client is not told the upstream failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// The error a limited body fails with.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

pin_project! {
    /// A request body that fails once more than `limit` bytes have passed.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
    }
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: *this.limit,
                        }))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(err.into())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn passes_bodies_within_the_limit_and_fails_larger_ones() {
        let ok = LimitedBody::new(Full::new(Bytes::from_static(b"12345")), 5);
        assert_eq!(ok.collect().await.unwrap().to_bytes().as_ref(), b"12345");

        let big = LimitedBody::new(Full::new(Bytes::from_static(b"123456")), 5);
        let err = big.collect().await.unwrap_err();
        assert!(err.downcast_ref::<BodyTooLarge>().is_some());
    }
}
