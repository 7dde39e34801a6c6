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
