//! A handler's word on whether its request ran, for the responses whose
//! status alone would mislead the store policy. A proxy is the usual case:
//! an upstream that refused the connection ran nothing, while one whose
//! connection broke after the request was sent may have run it.

/// Put in a response's extensions by the handler (or a service behind the
/// layer) to override the store policy for that response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// Nothing ran (e.g. the upstream could not be reached, so the request
    /// never left): the key is freed whatever the store policy, and the
    /// response goes out unstored. A retry runs the request.
    Nothing,
    /// Whether anything ran is unknown (e.g. the upstream's connection
    /// broke, or it did not answer in time, after the request was sent): the
    /// response is stored whatever the store policy, so a retry gets it
    /// replayed instead of running the request a second time.
    Unknown,
}
