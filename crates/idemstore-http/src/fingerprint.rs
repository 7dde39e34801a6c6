//! The request fingerprint: what makes two requests "the same request".

use crate::config::FingerprintSpec;
use http::request::Parts;
use idemstore::Fingerprint;

/// Digests the parts of the request `spec` names. Each part is
/// length-prefixed and tagged, so no two different requests share an
/// encoding (an absent header differs from an empty one).
pub fn fingerprint(spec: &FingerprintSpec, parts: &Parts, body: &[u8]) -> Fingerprint {
    let method = parts.method.as_str().as_bytes();
    let pq = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str())
        .as_bytes();
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(8 + 3 * spec.headers.len());
    if spec.method {
        pieces.extend([&b"m"[..], method]);
    }
    if spec.path_and_query {
        pieces.extend([&b"p"[..], pq]);
    }
    if spec.body {
        pieces.extend([&b"b"[..], body]);
    }
    for name in &spec.headers {
        pieces.push(b"h");
        pieces.push(name.as_str().as_bytes());
        match parts.headers.get(name) {
            Some(v) => pieces.extend([&b"="[..], v.as_bytes()]),
            None => pieces.push(b"-"),
        }
    }
    Fingerprint::of_parts(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, Request};

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn covers_exactly_what_the_spec_names() {
        let all = FingerprintSpec {
            headers: vec![HeaderName::from_static("x-account")],
            ..FingerprintSpec::default()
        };
        let base = fingerprint(&all, &parts("POST", "/a?x=1", &[("x-account", "1")]), b"{}");
        assert_eq!(
            base,
            fingerprint(&all, &parts("POST", "/a?x=1", &[("x-account", "1")]), b"{}")
        );
        for other in [
            fingerprint(
                &all,
                &parts("PATCH", "/a?x=1", &[("x-account", "1")]),
                b"{}",
            ),
            fingerprint(&all, &parts("POST", "/a?x=2", &[("x-account", "1")]), b"{}"),
            fingerprint(&all, &parts("POST", "/a?x=1", &[("x-account", "2")]), b"{}"),
            fingerprint(&all, &parts("POST", "/a?x=1", &[("x-account", "")]), b"{}"),
            fingerprint(&all, &parts("POST", "/a?x=1", &[]), b"{}"),
            fingerprint(
                &all,
                &parts("POST", "/a?x=1", &[("x-account", "1")]),
                b"{ }",
            ),
        ] {
            assert_ne!(base, other);
        }
        let body_only = FingerprintSpec {
            method: false,
            path_and_query: false,
            body: true,
            headers: vec![],
        };
        assert_eq!(
            fingerprint(&body_only, &parts("POST", "/a", &[]), b"x"),
            fingerprint(&body_only, &parts("PUT", "/b", &[("x-account", "9")]), b"x")
        );
    }
}
