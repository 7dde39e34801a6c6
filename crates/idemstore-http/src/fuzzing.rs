//! Entry point for the `http` cargo-fuzz target, kept in the library so that
//! the corpus replay test runs the same checks in CI. Not part of the API.

use crate::config::FingerprintSpec;
use crate::fingerprint::{digest, fingerprint};
use crate::json;
use crate::key::parse_key;
use http::{HeaderName, HeaderValue, Method, Request};

/// Arbitrary header values, methods, paths and bodies through key parsing and
/// fingerprinting: no panic; an accepted key is within bounds and printable;
/// fingerprints are deterministic and see the body; a body that parses as
/// JSON has a canonical form that parses to the same value and is its own
/// canonical form, and its JSON fingerprint is that of its canonical form.
pub fn http(data: &[u8]) {
    json_body(data);
    let split = |d: &[u8], at: usize| -> (Vec<u8>, Vec<u8>) {
        let at = at.min(d.len());
        (d[..at].to_vec(), d[at..].to_vec())
    };
    let first = usize::from(data.first().copied().unwrap_or(0));
    let (head, body) = split(data.get(1..).unwrap_or(&[]), first);
    let (key_bytes, rest) = split(&head, head.len() / 2);
    let (method_bytes, path_bytes) = split(&rest, rest.len() / 3);

    if let Ok(value) = HeaderValue::from_bytes(&key_bytes) {
        for bounds in [1..=255, 10..=1024] {
            if let Ok(k) = parse_key(&value, &bounds) {
                assert!(bounds.contains(&k.len()), "accepted {} bytes", k.len());
                assert!(k.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{k:?}");
                if !key_bytes.starts_with(b"\"") {
                    assert_eq!(k.as_bytes(), &key_bytes[..]);
                }
            }
        }
    }

    let method = Method::from_bytes(&method_bytes).unwrap_or(Method::POST);
    let path = format!("/{}", String::from_utf8_lossy(&path_bytes));
    let Ok(req) = Request::builder()
        .method(method)
        .uri(path.as_str())
        .header(
            "x-account",
            HeaderValue::from_bytes(&key_bytes).unwrap_or(HeaderValue::from_static("-")),
        )
        .body(())
    else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let spec = FingerprintSpec {
        headers: vec![HeaderName::from_static("x-account")],
        ..FingerprintSpec::default()
    };
    let a = fingerprint(&spec, &parts, &body);
    assert_eq!(a, fingerprint(&spec, &parts, &body));
    let mut other = body.clone();
    other.push(0);
    assert_ne!(a, fingerprint(&spec, &parts, &other));
}

/// The JSON checks of [`http`] on `body`.
fn json_body(body: &[u8]) {
    let Some(doc) = json::parse(body) else {
        return;
    };
    let canon = doc.canonical();
    let again = json::parse(&canon).expect("a canonical form parses");
    assert_eq!(again, doc);
    assert_eq!(again.canonical(), canon);
    let Ok(req) = Request::builder().uri("/").body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let spec = FingerprintSpec::json();
    assert_eq!(digest(&spec, &parts, body), digest(&spec, &parts, &canon));
}
