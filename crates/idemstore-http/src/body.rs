//! Bodies: the boxed body types the layer speaks, reading a response body up
//! to a limit, and a body that replays a read prefix before the rest.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Boxed error of the bodies the layer passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type of requests the inner service receives and of responses the
/// layer returns: any body, boxed. (A struct rather than an alias of
/// `UnsyncBoxBody<Bytes, BoxError>`, so that no `dyn` lifetime appears in the
/// service's bounds, which trips a rustc limitation with `Send` futures.)
pub struct BoxBody(UnsyncBoxBody<Bytes, BoxError>);

impl std::fmt::Debug for BoxBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxBody")
    }
}

impl Body for BoxBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Boxes any body with `Bytes` data.
pub fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxBody(body.map_err(Into::into).boxed_unsync())
}

/// A complete body.
pub fn full(bytes: Bytes) -> BoxBody {
    if bytes.is_empty() {
        boxed(Empty::new())
    } else {
        boxed(Full::new(bytes))
    }
}

/// A response body read up to a limit.
pub enum Collected<B> {
    /// All of it.
    Whole(Bytes),
    /// More than the limit: what was read, and the unread rest.
    TooLarge {
        /// The data read so far (a little over the limit at most by one frame).
        prefix: Bytes,
        /// The rest of the body.
        rest: B,
    },
    /// The body failed.
    Failed(BoxError),
}

/// Reads `body` until it ends or exceeds `limit` bytes. Trailers are dropped.
pub async fn collect_limited<B>(mut body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Collected::Whole(buf.freeze()),
            Some(Err(e)) => return Collected::Failed(e.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Collected::TooLarge {
                            prefix: buf.freeze(),
                            rest: body,
                        };
                    }
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `prefix`, then the rest of `rest`.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Prefixed<B> {
    /// A body that yields `prefix` first.
    pub fn new(prefix: Bytes, rest: B) -> Self {
        Prefixed {
            prefix: Some(prefix),
            rest,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.rest.size_hint();
        let p = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        // Raise the upper bound first: SizeHint asserts lower <= upper.
        if let Some(u) = h.upper() {
            h.set_upper(u.saturating_add(p));
        }
        h.set_lower(
            h.lower()
                .saturating_add(p)
                .min(h.upper().unwrap_or(u64::MAX)),
        );
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that yields the given chunks one frame each.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    #[tokio::test]
    async fn collects_whole_bodies_and_stops_past_the_limit_without_losing_bytes() {
        match collect_limited(chunks(&[b"ab", b"cd"]), 4).await {
            Collected::Whole(b) => assert_eq!(b.as_ref(), b"abcd"),
            _ => panic!("expected the whole body"),
        }
        match collect_limited(chunks(&[b"ab", b"cd", b"ef", b"gh"]), 3).await {
            Collected::TooLarge { prefix, rest } => {
                assert_eq!(prefix.as_ref(), b"abcd");
                let all = Prefixed::new(prefix, rest)
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes();
                assert_eq!(all.as_ref(), b"abcdefgh");
            }
            _ => panic!("expected too large"),
        }
    }
}
