//! The one spelling of a request path that both the route match and the
//! upstream see, so that no spelling of a covered path (`//`, `/./`,
//! `/a/../`, `%6D` for `m`) slips past its route's policy while the
//! upstream, normalizing, runs it as that path: empty and `.` segments
//! dropped, `..` resolved, escapes of unreserved characters (RFC 3986
//! section 2.3) decoded, other escapes' hex digits in upper case, a
//! trailing slash kept. Letter case is kept: paths are case-sensitive.

/// The canonical form of `path` (without its query).
pub(crate) fn canonical(path: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let seg = decode_unreserved(raw);
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}

/// `seg` with the escapes of unreserved characters decoded and the other
/// escapes' hex digits in upper case.
fn decode_unreserved(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = seg
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(char::from(v));
                } else {
                    out.push_str(&format!("%{v:02X}"));
                }
                i += 3;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn every_spelling_of_a_path_has_one_canonical_form() {
        for (raw, want) in [
            ("/v1/payments", "/v1/payments"),
            ("/v1//payments", "/v1/payments"),
            ("/v1/./payments", "/v1/payments"),
            ("/v1/x/../payments", "/v1/payments"),
            ("/v1/pay%6Dents", "/v1/payments"),
            ("/v1/%2e%2e/v1/payments", "/v1/payments"),
            ("/v1/payments/", "/v1/payments/"),
            ("/v1/a%2fb", "/v1/a%2Fb"),
            ("/../..", "/"),
            ("", "/"),
            ("/V1/Payments", "/V1/Payments"),
            ("/50%", "/50%"),
        ] {
            assert_eq!(canonical(raw), want, "{raw}");
        }
    }
}
