//! The engine's completed-record codec as a standalone value: what a shared
//! backend (Redis) stores, so that both backends keep the same bytes. Layout:
//! the record payload of FORMAT.md (kind 2), unframed.

use super::record::{self, Body, Record};
use crate::response::{Response, StoredResponse};
use crate::scope::TenantDigest;

/// Encodes a completed record for (`tenant`, `key`), reservation
/// `token`, or says why the format cannot hold it (a key over 65535
/// bytes, too many or too long headers, a body over 4 GiB).
pub fn encode(
    tenant: &TenantDigest,
    key: &[u8],
    token: u64,
    stored: &StoredResponse,
) -> Result<Vec<u8>, String> {
    if key.len() > usize::from(u16::MAX) {
        return Err(format!("a key of {} bytes (at most 65535)", key.len()));
    }
    if let Some(why) = record::unencodable(&stored.response) {
        return Err(why);
    }
    let mut out = Vec::with_capacity(128 + key.len() + stored.response.body.len());
    let body = Body::Completed(stored.clone());
    record::encode_parts(&mut out, token, tenant, key, token, &body);
    Ok(out)
}

/// Why the format cannot hold `response` (too many or too long headers,
/// a body over 4 GiB), or `None` when it can.
pub fn unencodable(response: &Response) -> Option<String> {
    record::unencodable(response)
}

/// How many bytes [`encode`] writes for `response` under a key of
/// `key_len` bytes, without encoding it (what a backend compares with its
/// largest record before the response is stored).
pub fn encoded_len(key_len: usize, response: &Response) -> usize {
    record::completed_payload_len(key_len, response)
}

/// Decodes what [`encode`] wrote: (tenant digest, key, record), or why not.
pub fn decode(bytes: &[u8]) -> Result<(TenantDigest, Vec<u8>, StoredResponse), String> {
    let rec = Record::decode(bytes).map_err(|e| e.to_string())?;
    match rec.body {
        Body::Completed(s) => Ok((rec.tenant, rec.key, s)),
        _ => Err("not a completed record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::scope::Fingerprint;

    #[test]
    fn encoded_len_is_the_length_encode_writes() {
        for (key, headers, body) in [
            (&b"k"[..], 0, 0),
            (&b"a-longer-key-0123456789"[..], 3, 1000),
            (&[7u8; 255][..], 17, 70_000),
        ] {
            let mut response = Response::new(201, vec![1u8; body]);
            for i in 0..headers {
                response
                    .headers
                    .push((format!("x-h{i}"), vec![b'v'; i * 13]));
            }
            let stored = StoredResponse {
                fingerprint: Fingerprint::of(b"r"),
                started_at: Timestamp(1),
                completed_at: Timestamp(2),
                expires_at: Timestamp(3),
                response: response.clone(),
            };
            let bytes = encode(&TenantDigest::of(b"t"), key, 9, &stored).unwrap();
            assert_eq!(encoded_len(key.len(), &response), bytes.len());
        }
    }
}
