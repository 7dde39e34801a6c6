//! Forwarding a request to the upstream and its response back, streamed both
//! ways (the layer in front buffers a keyed request's body, within its
//! `max_request_bytes`, to fingerprint it). A reserved key's response body
//! is read whole first when it ends within the largest `max_response_bytes`
//! and the upstream timeout, so the layer stores it before it is sent, as it does a
//! handler's whole body; a longer one streams.
//!
//! What the proxy tells the layer, when the upstream fails:
//!
//! | upstream | client gets | the key |
//! | --- | --- | --- |
//! | answers | its response | stored or freed per the route's store policy |
//! | refuses the connection, or cannot be reached (nothing was sent) | 502 `upstream-unreachable` | freed ([`Ran::Nothing`]): a retry runs |
//! | its connection breaks after the request was sent | 502 `upstream-failed` | stored ([`Ran::Unknown`]): the request may have run, so it never runs again |
//! | sends no response head within `--upstream-timeout` | 504 `upstream-timeout` | stored ([`Ran::Unknown`]), as above |
//! | its response body breaks before it was all read (within the largest `max_response_bytes`) | 502 `upstream-failed` | stored whatever the policy ([`Ran::Unknown`]) |
//! | its response body breaks while it streams to the client (past that size) | a cut body | per the store policy, as for any failed handler |
//!
//! Hop-by-hop headers (RFC 9110 section 7.6.1: `Connection` and the headers it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) are dropped both ways. The client's
//! `Host` is kept; `X-Forwarded-For` gets the peer's address appended, and
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are set unless a proxy in
//! front (a TLS ingress) set them.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idemstore_http::{BoxBody, Ran};
use idemstore_server::serve::Peer;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The upstream, as `--upstream` names it.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    /// `http`.
    scheme: http::uri::Scheme,
    /// `host:port`.
    authority: http::uri::Authority,
}

impl Upstream {
    /// Parses `http://host:port` (no path, no TLS: the upstream is the
    /// service beside the proxy).
    pub(crate) fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("--upstream {url:?}: {e} (write e.g. http://127.0.0.1:8080)"))?;
        match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) if s == &http::uri::Scheme::HTTP => {
                if (uri.path() != "/" && !uri.path().is_empty()) || uri.query().is_some() {
                    return Err(format!(
                        "--upstream {url:?}: no path or query, please: requests keep theirs"
                    ));
                }
                if a.as_str().contains('@') {
                    return Err(format!("--upstream {url:?}: no user or password, please"));
                }
                // The port, explicit: the readiness probe connects to it.
                let authority = format!("{}:{}", a.host(), a.port_u16().unwrap_or(80))
                    .parse()
                    .map_err(|e| format!("--upstream {url:?}: {e}"))?;
                Ok(Upstream {
                    scheme: s.clone(),
                    authority,
                })
            }
            (Some(s), _) if s == &http::uri::Scheme::HTTPS => Err(format!(
                "--upstream {url:?}: https is not supported; the upstream is the service beside \
                 the proxy, reached over plain HTTP on the loopback or pod network"
            )),
            _ => Err(format!(
                "--upstream {url:?}: write an http URL, e.g. http://127.0.0.1:8080"
            )),
        }
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

/// The service behind the layer: sends each request to the upstream.
#[derive(Clone)]
pub(crate) struct Forward {
    client: Client<HttpConnector, BoxBody>,
    upstream: Upstream,
    timeout: Duration,
    /// Response bodies up to this many bytes are read whole before the
    /// layer sees them (the largest `max_response_bytes` of any route).
    buffer: usize,
}

impl Forward {
    /// Forwards to `upstream`, waiting up to `timeout` for each response's
    /// head, connecting within `connect_timeout`, keeping up to
    /// `idle_per_host` idle connections for up to `idle_timeout`, reading
    /// response bodies of up to `buffer` bytes whole.
    pub(crate) fn new(
        upstream: Upstream,
        timeout: Duration,
        connect_timeout: Duration,
        idle_per_host: usize,
        idle_timeout: Duration,
        buffer: usize,
    ) -> Forward {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_per_host)
            .pool_idle_timeout(idle_timeout)
            .build(connector);
        Forward {
            client,
            upstream,
            timeout,
            buffer,
        }
    }
}

/// The headers a proxy never forwards (plus those `Connection` names).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Drops the hop-by-hop headers of `h`.
fn drop_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(&named) {
        h.remove(n);
    }
}

/// A problem+json answer of the proxy's own, marked with what ran.
fn problem(status: StatusCode, code: &str, detail: String, ran: Ran) -> Response<BoxBody> {
    let body = serde_json::json!({
        "type": format!("urn:idemstore:problem:{code}"),
        "code": code,
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = Response::new(BoxBody::new(http_body_util::Full::new(Bytes::from(
        body.to_string(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(ran);
    r
}

impl Forward {
    /// The request as the upstream gets it.
    fn outgoing(&self, req: Request<BoxBody>) -> Result<Request<BoxBody>, String> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_owned();
        parts.uri = Uri::builder()
            .scheme(self.upstream.scheme.clone())
            .authority(self.upstream.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| e.to_string())?;
        let host = parts.headers.get(header::HOST).cloned();
        drop_hop_by_hop(&mut parts.headers);
        // The client's Host, or the upstream's when it sent none (HTTP/1.0).
        let host = host.unwrap_or_else(|| {
            HeaderValue::from_str(self.upstream.authority()).unwrap_or(HeaderValue::from_static(""))
        });
        parts.headers.insert(header::HOST, host.clone());
        // What a proxy in front (a TLS ingress) said of the original
        // request is kept; else this hop's.
        parts
            .headers
            .entry(HeaderName::from_static("x-forwarded-host"))
            .or_insert(host);
        parts
            .headers
            .entry(HeaderName::from_static("x-forwarded-proto"))
            .or_insert(HeaderValue::from_static("http"));
        if let Some(Peer(addr)) = parts.extensions.get::<Peer>() {
            let xff = HeaderName::from_static("x-forwarded-for");
            let mut chain: Vec<String> = parts
                .headers
                .get_all(&xff)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            chain.push(addr.ip().to_string());
            if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
                parts.headers.insert(xff, v);
            }
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Sends `req` upstream; every failure is an answer (see the module docs).
    async fn send(self, req: Request<BoxBody>) -> Response<BoxBody> {
        let req = match self.outgoing(req) {
            Ok(r) => r,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "request-unforwardable",
                    format!("The request cannot be forwarded ({e}); it did not run."),
                    Ran::Nothing,
                );
            }
        };
        let upstream = self.upstream.authority().to_owned();
        // Only a reserved key's response is stored: only it is read whole.
        let stored = req
            .extensions()
            .get::<idemstore_http::drive::Reserved>()
            .is_some();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sent = tokio::time::timeout_at(deadline, self.client.request(req)).await;
        match sent {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                drop_hop_by_hop(&mut parts.headers);
                if !stored {
                    return Response::from_parts(
                        parts,
                        BoxBody::new(body.map_err(Into::<idemstore_http::BoxError>::into)),
                    );
                }
                match self.buffered(body, deadline).await {
                    Ok(body) => Response::from_parts(parts, body),
                    // Nothing reached the client yet, and the upstream ran.
                    Err(()) => broken(),
                }
            }
            Ok(Err(e)) if e.is_connect() => problem(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                format!(
                    "The service behind this proxy cannot be reached ({}); the request did not \
                     run. Retry later with the same idempotency key.",
                    connect_reason(&e, &upstream)
                ),
                Ran::Nothing,
            ),
            Ok(Err(_)) => broken(),
            Err(_) => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                format!(
                    "The service behind this proxy did not answer within {}; the request may \
                     have run. This answer is kept under the idempotency key: a retry gets it \
                     again and never runs the request a second time. Check the outcome before \
                     sending a new request with a new key.",
                    humantime::format_duration(self.timeout)
                ),
                Ran::Unknown,
            ),
        }
    }
}

impl Forward {
    /// A reserved key's response body, read whole when it ends within
    /// `buffer` bytes before `deadline` (`Err` when it breaks meanwhile: the
    /// upstream ran, and nothing reached the client yet): the layer then stores it before
    /// sending it (in `Sync` durability, no answer leaves before its record
    /// is durable, and a retry right after it is a replay). A longer or
    /// slower body streams on from what was read, and is stored (or
    /// replaced by the not-replayable notice) when it ends.
    async fn buffered(
        &self,
        mut body: Incoming,
        deadline: tokio::time::Instant,
    ) -> Result<BoxBody, ()> {
        let mut kept = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            };
            match frame {
                None => return Ok(BoxBody::new(Full::new(kept.freeze()))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                    if kept.len() > self.buffer {
                        break;
                    }
                }
                Some(Err(_)) => return Err(()),
            }
        }
        Ok(BoxBody::new(Prefixed {
            prefix: Some(kept.freeze()),
            rest: body,
        }))
    }
}

/// What was read of a body, then the rest of it.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = idemstore_http::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(p) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(http_body::Frame::data(p))));
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(Into::into)
    }
}

/// 502 for an upstream whose connection broke after the request was sent:
/// it may have run.
fn broken() -> Response<BoxBody> {
    problem(
        StatusCode::BAD_GATEWAY,
        "upstream-failed",
        "The connection to the service behind this proxy broke after the request was sent, so \
         it may have run. This answer is kept under the idempotency key: a retry gets it again \
         and never runs the request a second time. Check the outcome before sending a new \
         request with a new key."
            .into(),
        Ran::Unknown,
    )
}

/// Why a connection to the upstream failed, for the client (no more than
/// the upstream's address and the kind of failure).
fn connect_reason(e: &hyper_util::client::legacy::Error, upstream: &str) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return format!("{upstream}: {}", io.kind());
        }
        source = s.source();
    }
    format!("{upstream}: connect failed")
}

impl tower::Service<Request<BoxBody>> for Forward {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.send(req).await) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        drop_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn an_upstream_is_a_plain_http_origin() {
        assert!(Upstream::parse("http://127.0.0.1:8080").is_ok());
        assert!(Upstream::parse("http://127.0.0.1:8080/").is_ok());
        assert_eq!(Upstream::parse("http://svc").unwrap().authority(), "svc:80");
        for (bad, says) in [
            ("https://a:1", "https is not supported"),
            ("http://a:1/base", "no path"),
            ("http://u:p@a:1", "no user"),
            ("127.0.0.1:8080", "write an http URL"),
        ] {
            let e = Upstream::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
