//! What a completed key stores and replays: the response, byte for byte.

use crate::clock::Timestamp;
use crate::scope::Fingerprint;

/// A response as the store keeps it: status, headers in order, body.
///
/// The engine does not interpret headers; the HTTP layer decides which ones
/// are worth storing (hop-by-hop headers and `Date` are not).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// Status code, e.g. 201.
    pub status: u16,
    /// Header names and values, in the order they are to be replayed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A completed record read back from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// Fingerprint of the request that produced the response.
    pub fingerprint: Fingerprint,
    /// When the first request reserved the key.
    pub started_at: Timestamp,
    /// When the response was stored.
    pub completed_at: Timestamp,
    /// When the record stops being served.
    pub expires_at: Timestamp,
    /// The response itself.
    pub response: Response,
}

/// The engine's completed-record codec as a standalone value: what a shared
/// backend (Redis) stores, so that both backends keep the same bytes. Layout:
/// the record payload of FORMAT.md (kind 2), unframed.
pub mod codec {
    use super::StoredResponse;
    use crate::format::record::{self, Body, Record};
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
    pub fn unencodable(response: &super::Response) -> Option<String> {
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
}
