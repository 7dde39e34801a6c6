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

/// Decodes what [`encode`] wrote: (tenant digest, key, record), or why not.
pub fn decode(bytes: &[u8]) -> Result<(TenantDigest, Vec<u8>, StoredResponse), String> {
    let rec = Record::decode(bytes).map_err(|e| e.to_string())?;
    match rec.body {
        Body::Completed(s) => Ok((rec.tenant, rec.key, s)),
        _ => Err("not a completed record".into()),
    }
}
