//! Bodies: the boxed body types the layer speaks, reading a response body up
//! to a limit, and a body that replays a read prefix before the rest.

use bytes::Bytes;
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

impl BoxBody {
    /// Boxes `body`.
    pub fn new<B>(body: B) -> BoxBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        boxed(body)
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
pub(crate) fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxBody(body.map_err(Into::into).boxed_unsync())
}

/// A complete body.
pub(crate) fn full(bytes: Bytes) -> BoxBody {
    if bytes.is_empty() {
        boxed(Empty::new())
    } else {
        boxed(Full::new(bytes))
    }
}

pin_project_lite::pin_project! {
    /// `prefix`, then the rest of `rest`.
    pub(crate) struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Prefixed<B> {
    /// A body that yields `prefix` first.
    pub(crate) fn new(prefix: Bytes, rest: B) -> Self {
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

    #[tokio::test]
    async fn a_prefixed_body_yields_its_prefix_then_the_rest_and_sizes_both() {
        let body = Prefixed::new(
            Bytes::from_static(b"ab"),
            Full::new(Bytes::from_static(b"cd")),
        );
        let hint = body.size_hint();
        assert_eq!((hint.lower(), hint.upper()), (4, Some(4)));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.as_ref(), b"abcd");
    }
}
