//! Holding a request body in memory, up to a bound, for the stages that must see all of it
//! or send it more than once: routing on the model, reading an LLM request, retries and
//! fallbacks. Bodies nobody needs are never read here: they stream to the upstream.
//!
//! A body larger than the bound is not an error by itself: what was read so far is kept as
//! a prefix and sent first, then the rest streams ([`RequestBody::Partial`]). Such a body is
//! sent once and never retried; a stage that must have it whole (model routing) refuses it
//! with 413.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use smallvec::SmallVec;

use super::limit::LimitedBody;
use crate::body::{self, Body, BoxError};
use crate::error::ProxyError;

/// A request body: not read, read whole, or read up to the bound.
pub enum RequestBody<B> {
    /// Not read yet.
    Stream(LimitedBody<B>),
    /// Read whole.
    Held(Bytes),
    /// The first bytes read, up to the bound; the rest still streams.
    Partial { prefix: Bytes, rest: Body },
}

impl<B> RequestBody<B>
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    /// Reads the body into memory, up to `bound` bytes, waiting at most `gap` for each next
    /// piece (a client that stops sending gets 408). A body already read is kept as it is;
    /// an empty one costs no read. The body is read in place (boxed only when its rest must
    /// stream), and its end is known from its last frame, without asking once more.
    pub async fn hold(self, bound: u64, gap: Option<Duration>) -> Result<RequestBody<B>, ProxyError>
    where
        B: Unpin,
    {
        let RequestBody::Stream(mut stream) = self else {
            return Ok(self);
        };
        if stream.is_end_stream() {
            return Ok(RequestBody::Held(Bytes::new()));
        }
        // Inline for the usual body of one or two frames: no allocation besides the body.
        let mut chunks: SmallVec<[Bytes; 2]> = SmallVec::new();
        let mut len = 0u64;
        while !stream.is_end_stream() {
            let frame = match gap {
                None => stream.frame().await,
                Some(gap) => tokio::time::timeout(gap, stream.frame())
                    .await
                    .map_err(|_| ProxyError::BodyReadTimeout(gap))?,
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|err| {
                crate::upstream::classify(&*err)
                    .unwrap_or_else(|| ProxyError::ClientBody(err.to_string()))
            })?;
            // Trailers of a request body are dropped: no OpenAI API sends them.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len += data.len() as u64;
            chunks.push(data);
            if len > bound {
                return Ok(RequestBody::Partial {
                    prefix: concat(chunks, len),
                    rest: body::boxed(stream),
                });
            }
        }
        Ok(RequestBody::Held(concat(chunks, len)))
    }

    /// The whole body, when it has been read.
    pub fn held(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Held(bytes) => Some(bytes),
            RequestBody::Stream(_) | RequestBody::Partial { .. } => None,
        }
    }

    /// The body to send once.
    pub fn into_body(self) -> Body {
        match self {
            RequestBody::Held(bytes) => body::full(bytes),
            RequestBody::Stream(stream) => body::boxed(stream),
            RequestBody::Partial { prefix, rest } => body::boxed(Prefixed {
                prefix: Some(prefix),
                rest,
            }),
        }
    }
}

/// One `Bytes` of all the chunks; a single chunk is not copied.
fn concat(mut chunks: SmallVec<[Bytes; 2]>, len: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

pin_project! {
    /// The bytes read so far, then the rest of the body.
    struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> HttpBody for Prefixed<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        hint.set_lower(hint.lower() + extra);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunked(parts: &[&'static str]) -> LimitedBody<Body> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        LimitedBody::new(body::boxed(stream), 1 << 20)
    }

    #[tokio::test]
    async fn small_bodies_are_held_whole() {
        let held = RequestBody::Stream(chunked(&["ab", "cd"]))
            .hold(4, None)
            .await
            .unwrap();
        assert_eq!(held.held().map(|b| &b[..]), Some(&b"abcd"[..]));
    }

    #[tokio::test]
    async fn large_bodies_keep_their_prefix_and_stream_the_rest() {
        let partial = RequestBody::Stream(chunked(&["ab", "cd", "ef"]))
            .hold(3, None)
            .await
            .unwrap();
        assert!(partial.held().is_none());
        let all = partial.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
    }
}
