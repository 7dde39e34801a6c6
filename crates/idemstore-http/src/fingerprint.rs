//! The request fingerprint: what makes two requests "the same request";
//! and, for a JSON body, the digests of its members, which let a 422 name
//! the members that differ from the first request's.

use crate::config::{FingerprintSpec, JsonBody};
use crate::json::{self, Json};
use http::request::Parts;
use idemstore::Fingerprint;

/// Digests the parts of the request `spec` names. Each part is
/// length-prefixed and tagged, so no two different requests share an
/// encoding (an absent header differs from an empty one).
pub fn fingerprint(spec: &FingerprintSpec, parts: &Parts, body: &[u8]) -> Fingerprint {
    digest(spec, parts, body).fingerprint
}

/// A request's fingerprint, with its body's member digests when the body
/// is fingerprinted as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDigest {
    /// What decides whether two requests are the same.
    pub fingerprint: Fingerprint,
    /// Per member of a JSON body (the top-level members, or the chosen
    /// pointers): a digest of its canonical value. `None` when the body is
    /// not fingerprinted as JSON or is not a JSON object.
    pub members: Option<Members>,
}

/// Digests of a JSON body's members, by name (a top-level member's name,
/// or a chosen JSON pointer); never the values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members(Vec<(String, String)>);

impl Members {
    /// As stored with the record: a JSON object of name to digest.
    pub(crate) fn encode(&self) -> String {
        let m: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(n, d)| (n.clone(), d.clone().into()))
            .collect();
        serde_json::Value::Object(m).to_string()
    }

    /// What [`encode`](Self::encode) wrote; `None` for anything else.
    pub(crate) fn decode(text: &[u8]) -> Option<Members> {
        let v: serde_json::Value = serde_json::from_slice(text).ok()?;
        let m = v.as_object()?;
        let mut out = Vec::with_capacity(m.len());
        for (k, d) in m {
            out.push((k.clone(), d.as_str()?.to_owned()));
        }
        out.sort();
        Some(Members(out))
    }

    /// The names whose digests differ between `self` and `other`, or that
    /// only one of them has, in order.
    pub fn differing(&self, other: &Members) -> Vec<String> {
        let mine: std::collections::BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_str()))
            .collect();
        let theirs: std::collections::BTreeMap<&str, &str> = other
            .0
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_str()))
            .collect();
        let names: std::collections::BTreeSet<&str> =
            mine.keys().chain(theirs.keys()).copied().collect();
        names
            .into_iter()
            .filter(|n| mine.get(n) != theirs.get(n))
            .map(str::to_owned)
            .collect()
    }
}

/// 64 bits of blake3, as hex: enough to tell members apart, small to store.
fn short_digest(bytes: &[u8]) -> String {
    let mut hex = Fingerprint::of(bytes).to_hex();
    hex.truncate(16);
    hex
}

/// The body's part of the fingerprint, and its members, as JSON per `j`:
/// `None` when the body is not JSON (it is then fingerprinted as bytes).
fn json_part(j: &JsonBody, body: &[u8]) -> Option<(Vec<u8>, Option<Members>)> {
    let doc = json::parse(body)?;
    if j.members.is_empty() {
        let Json::Object(m) = &doc else {
            return Some((doc.canonical(), None));
        };
        // The canonical object, each member's digest taken from its value's
        // bytes as they are written (one pass).
        let mut out = Vec::with_capacity(body.len());
        let mut members = Vec::with_capacity(m.len());
        out.push(b'{');
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_string(k, &mut out);
            out.push(b':');
            let start = out.len();
            v.write(&mut out);
            members.push((k.clone(), short_digest(&out[start..])));
        }
        out.push(b'}');
        return Some((out, Some(Members(members))));
    }
    // Only the chosen members: each pointer, then its value or "absent".
    let mut part = Vec::new();
    let mut members = Vec::with_capacity(j.members.len());
    for pointer in &j.members {
        let value = doc.at(pointer).map(Json::canonical);
        part.extend_from_slice(&(pointer.len() as u64).to_le_bytes());
        part.extend_from_slice(pointer.as_bytes());
        match &value {
            Some(v) => {
                part.push(b'=');
                part.extend_from_slice(&(v.len() as u64).to_le_bytes());
                part.extend_from_slice(v);
            }
            None => part.push(b'-'),
        }
        let d = value.map_or_else(|| "absent".to_owned(), |v| short_digest(&v));
        members.push((pointer.clone(), d));
    }
    members.sort();
    Some((part, Some(Members(members))))
}

/// The fingerprint of the parts of the request `spec` names (see
/// [`fingerprint`]), with the body's member digests.
pub fn digest(spec: &FingerprintSpec, parts: &Parts, body: &[u8]) -> RequestDigest {
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
    let json = match (&spec.json, spec.body) {
        (Some(j), true) => json_part(j, body),
        _ => None,
    };
    let members = match (&json, spec.body) {
        (Some((part, members)), true) => {
            pieces.extend([&b"j"[..], part.as_slice()]);
            members.clone()
        }
        (None, true) => {
            pieces.extend([&b"b"[..], body]);
            None
        }
        (_, false) => None,
    };
    for name in &spec.headers {
        pieces.push(b"h");
        pieces.push(name.as_str().as_bytes());
        match parts.headers.get(name) {
            Some(v) => pieces.extend([&b"="[..], v.as_bytes()]),
            None => pieces.push(b"-"),
        }
    }
    RequestDigest {
        fingerprint: Fingerprint::of_parts(pieces),
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, Request};

    fn json_spec(members: &[&str]) -> FingerprintSpec {
        FingerprintSpec {
            json: Some(JsonBody {
                members: members.iter().map(|m| (*m).to_owned()).collect(),
            }),
            ..FingerprintSpec::default()
        }
    }

    #[test]
    fn a_json_body_is_fingerprinted_by_its_canonical_form_and_others_by_bytes() {
        let spec = json_spec(&[]);
        let p = parts("POST", "/pay", &[]);
        let d = |b: &str| digest(&spec, &p, b.as_bytes());
        let a = d(r#"{"amount":5,"currency":"EUR"}"#);
        assert_eq!(
            a.fingerprint,
            d("{ \"currency\" : \"EUR\", \"amount\" : 5 }").fingerprint
        );
        assert_ne!(
            a.fingerprint,
            d(r#"{"amount":5.0,"currency":"EUR"}"#).fingerprint
        );
        let b = d(r#"{"amount":6,"currency":"EUR","memo":"x"}"#);
        assert_eq!(
            a.members.unwrap().differing(&b.members.unwrap()),
            ["amount", "memo"]
        );
        // Not JSON: bytes, and no members; never equal to a JSON body's.
        let raw = d("amount=5");
        assert!(raw.members.is_none());
        assert_ne!(
            raw.fingerprint,
            fingerprint(&FingerprintSpec::default(), &p, b"x")
        );
        assert_eq!(raw.fingerprint, d("amount=5").fingerprint);
        // An array body: canonical, but no members to name.
        assert!(d("[1, 2]").members.is_none());
    }

    #[test]
    fn chosen_members_are_all_that_count() {
        let spec = json_spec(&["/amount", "/customer/id"]);
        let p = parts("POST", "/pay", &[]);
        let d = |b: &str| digest(&spec, &p, b.as_bytes());
        let a = d(r#"{"amount":5,"customer":{"id":"c1","name":"A"},"note":"x"}"#);
        let same = d(r#"{"customer":{"name":"B","id":"c1"},"amount":5}"#);
        assert_eq!(a.fingerprint, same.fingerprint);
        let other = d(r#"{"amount":5,"customer":{}}"#);
        assert_ne!(a.fingerprint, other.fingerprint);
        assert_eq!(
            a.members.unwrap().differing(&other.members.unwrap()),
            ["/customer/id"]
        );
    }

    #[test]
    fn members_roundtrip_as_stored() {
        let spec = json_spec(&[]);
        let m = digest(&spec, &parts("POST", "/", &[]), br#"{"a":1,"b\"c":[2]}"#)
            .members
            .unwrap();
        assert_eq!(Members::decode(m.encode().as_bytes()), Some(m));
        assert_eq!(Members::decode(b"not json"), None);
    }

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
            json: None,
        };
        assert_eq!(
            fingerprint(&body_only, &parts("POST", "/a", &[]), b"x"),
            fingerprint(&body_only, &parts("PUT", "/b", &[("x-account", "9")]), b"x")
        );
    }
}
