//! Between actix's types (http 0.2, `MessageBody`, a `!Send` payload
//! stream) and the core's (http 1, `http_body::Body`). Methods, URIs,
//! statuses and headers convert through their text or bytes, which both
//! versions read the same way.
//!
//! A handler's response body that is all there when it returns
//! (`MessageBody::try_into_bytes`) becomes a whole body, so the core stores
//! it before sending it, as with tower; one that streams is pumped on the
//! worker into a channel the core reads, frame by frame, with backpressure.

use crate::RequestTenant;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Payload;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use idemstore_http::{BoxBody, BoxError, Ran};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Frames buffered between a streaming handler body and the core.
const PUMP_FRAMES: usize = 16;

/// The core's view of an actix request head, with the tenant found for it.
pub(crate) fn head_parts(req: &HttpRequest, tenant: Option<RequestTenant>) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(
            http::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(http::Method::GET),
        )
        .uri(
            req.uri()
                .to_string()
                .parse::<http::Uri>()
                .unwrap_or_default(),
        );
    for (name, value) in req.headers() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            b = b.header(n, v);
        }
    }
    let (mut parts, ()) = b
        .body(())
        .unwrap_or_else(|_| http::Request::new(()))
        .into_parts();
    if let Some(t) = tenant {
        parts.extensions.insert(t);
    }
    parts
}

/// An actix request payload as an `http_body::Body`.
pub(crate) struct PayloadBody(Payload);

impl PayloadBody {
    pub(crate) fn new(p: Payload) -> Self {
        PayloadBody(p)
    }
}

impl Body for PayloadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.0).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.to_string().into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A handler's response body as the core reads it: whole, or pumped from a
/// stream on the worker.
pub(crate) enum HandlerBody {
    Whole(Option<Bytes>),
    Pumped(mpsc::Receiver<Result<Bytes, String>>),
}

impl Body for HandlerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            HandlerBody::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            HandlerBody::Pumped(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, HandlerBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            HandlerBody::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            HandlerBody::Whole(None) => SizeHint::with_exact(0),
            HandlerBody::Pumped(_) => SizeHint::default(),
        }
    }
}

/// Reads `body` on the worker into a channel, until it ends, fails, or the
/// reader is gone.
fn pump<B: MessageBody + 'static>(body: B) -> HandlerBody {
    let (tx, rx) = mpsc::channel(PUMP_FRAMES);
    actix_web::rt::spawn(async move {
        let mut body = std::pin::pin!(body);
        loop {
            let next = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await;
            let item = match next {
                None => return,
                Some(Ok(b)) => Ok(b),
                Some(Err(e)) => Err(e.into().to_string()),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    HandlerBody::Pumped(rx)
}

/// A handler's actix response as the core reads it (its [`Ran`] mark kept).
pub(crate) fn to_http<B: MessageBody + 'static>(
    res: HttpResponse<B>,
) -> http::Response<HandlerBody> {
    let mut b = http::Response::builder().status(res.status().as_u16());
    for (name, value) in res.headers() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            b = b.header(n, v);
        }
    }
    let ran = res.extensions().get::<Ran>().copied();
    let body = match res.into_body().try_into_bytes() {
        Ok(bytes) => HandlerBody::Whole(Some(bytes)),
        Err(body) => pump(body),
    };
    let mut r = b.body(body).unwrap_or_else(|e| {
        let mut r = http::Response::new(HandlerBody::Whole(Some(Bytes::from(e.to_string()))));
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    if let Some(ran) = ran {
        r.extensions_mut().insert(ran);
    }
    r
}

/// A body the core answers with, as actix sends it.
pub struct Outgoing(BoxBody);

impl MessageBody for Outgoing {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        match self.0.size_hint().exact() {
            Some(n) => BodySize::Sized(n),
            None => BodySize::Stream,
        }
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        loop {
            match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The core's answer as an actix response.
pub(crate) fn to_actix(r: http::Response<BoxBody>) -> HttpResponse<Outgoing> {
    let (parts, body) = r.into_parts();
    let status = actix_web::http::StatusCode::from_u16(parts.status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::with_body(status, Outgoing(body));
    for (name, value) in &parts.headers {
        if let (Ok(n), Ok(v)) = (
            actix_web::http::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            res.headers_mut().append(n, v);
        }
    }
    res
}

/// Marks an actix response with what ran, for the store policy (see
/// [`Ran`]).
pub fn mark<B>(response: &mut HttpResponse<B>, ran: Ran) {
    response.extensions_mut().insert(ran);
}
