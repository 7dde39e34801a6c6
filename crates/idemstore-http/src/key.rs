//! Reading the idempotency key from its header value.
//!
//! Two spellings are accepted, because clients send both:
//! - a structured-field string (the IETF draft): `"8e03978e-40d5-43e8"`,
//!   parsed with `sfv` (RFC 9651); parameters are ignored;
//! - a plain token (Stripe and most APIs): `8e03978e-40d5-43e8`, every byte
//!   visible ASCII (0x21..=0x7E).
//!
//! The key's length is counted in bytes of the decoded value.

use http::HeaderValue;
use std::ops::RangeInclusive;

/// Why a key header was refused. The message tells the client what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyError(pub String);

/// The key a header value carries.
pub(crate) fn parse_key(
    value: &HeaderValue,
    len: &RangeInclusive<usize>,
) -> Result<String, KeyError> {
    let raw = value.as_bytes();
    let key = if raw.first() == Some(&b'"') {
        let item: sfv::Item = sfv::Parser::new(raw).parse().map_err(|e| {
            KeyError(format!(
                "the key starts with a quote but is not a valid structured-field string ({e}); \
                 send it as \"...\" with \\\" and \\\\ escaped, or without quotes"
            ))
        })?;
        match item.bare_item {
            sfv::BareItem::String(s) => s.as_str().to_owned(),
            _ => {
                return Err(KeyError(
                    "the key must be a structured-field string or a plain token".into(),
                ));
            }
        }
    } else {
        if let Some(b) = raw.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
            return Err(KeyError(format!(
                "the key contains byte 0x{b:02x}; use visible ASCII characters only (no spaces), \
                 e.g. a UUID"
            )));
        }
        // Visible ASCII is UTF-8.
        String::from_utf8_lossy(raw).into_owned()
    };
    if !len.contains(&key.len()) {
        return Err(KeyError(format!(
            "the key is {} characters long; send between {} and {}",
            key.len(),
            len.start(),
            len.end()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[u8]) -> Result<String, KeyError> {
        parse_key(&HeaderValue::from_bytes(v).unwrap(), &(1..=255))
    }

    #[test]
    fn plain_tokens_and_structured_strings_are_both_accepted() {
        assert_eq!(parse(b"abc-123").unwrap(), "abc-123");
        assert_eq!(parse(b"\"abc-123\"").unwrap(), "abc-123");
        assert_eq!(parse(b"\"with space\"").unwrap(), "with space");
        assert_eq!(parse(b"\"q\\\"uote\"").unwrap(), "q\"uote");
        assert_eq!(parse(b"\"k\";param=1").unwrap(), "k");
    }

    #[test]
    fn malformed_keys_say_why() {
        assert!(parse(b"has space").unwrap_err().0.contains("0x20"));
        assert!(
            parse(b"\"unterminated")
                .unwrap_err()
                .0
                .contains("structured-field")
        );
        assert!(parse(b"\"\"").unwrap_err().0.contains("0 characters"));
        assert!(
            parse(b"caf\xc3\xa9")
                .unwrap_err()
                .0
                .contains("visible ASCII")
        );
        let long = vec![b'a'; 256];
        assert!(parse(&long).unwrap_err().0.contains("256 characters"));
        let bounds = 10..=1024;
        let e = parse_key(&HeaderValue::from_static("short"), &bounds).unwrap_err();
        assert!(e.0.contains("between 10 and 1024"), "{}", e.0);
    }
}
