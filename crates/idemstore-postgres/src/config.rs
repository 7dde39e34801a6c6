//! [`PostgresConfig`]: how the backend behaves, and the checks made on it
//! before connecting.

use idemstore_http::BackendError;
use std::time::Duration;

/// How the PostgreSQL backend behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// How long a completed response is replayed (default 24 h).
    pub retention: Duration,
    /// How long a reservation holds its key unless renewed (default 60 s).
    pub lease: Duration,
    /// Longest a single call may take, waiting for a pooled connection
    /// included (default 2 s); past it the call fails (a `begin` with 503,
    /// the handler not run).
    pub timeout: Duration,
    /// Most connections the pool opens (default 16). Calls beyond it wait
    /// for one, at most `timeout`.
    pub max_connections: u32,
    /// Longest key accepted, in bytes (default 255).
    pub max_key_len: usize,
    /// Largest stored record in bytes (default 4 MiB).
    pub max_record_bytes: usize,
    /// How often expired rows are deleted (default 60 s), in batches of
    /// `sweep_batch`. Every process sweeps; they skip each other's rows.
    pub sweep_interval: Duration,
    /// Rows one sweeping statement deletes at most (default 5000).
    pub sweep_batch: u32,
    /// The PostgreSQL schema (namespace) of the backend's table (default
    /// none: the connection's `search_path`, usually `public`). Services
    /// sharing a database each take their own; `connect` creates it when it
    /// migrates. Lower-case letters, digits and `_`.
    pub schema: Option<String>,
    /// Whether `connect` creates or migrates the schema (default true). Off,
    /// it checks that the schema is at this build's version and fails
    /// otherwise (for databases whose schema an operator migrates).
    pub migrate: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            max_connections: 16,
            max_key_len: 255,
            max_record_bytes: 4 << 20,
            sweep_interval: Duration::from_secs(60),
            sweep_batch: 5000,
            schema: None,
            migrate: true,
        }
    }
}

impl PostgresConfig {
    /// Sets the retention.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }
    /// Sets the lease.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Sets the per-call timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
    /// Sets the pool's size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets the schema of the backend's table.
    pub fn schema(mut self, s: impl Into<String>) -> Self {
        self.schema = Some(s.into());
        self
    }
    /// Sets how often expired rows are deleted.
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.sweep_interval = d;
        self
    }

    /// Refuses settings the backend cannot work with, saying what to do.
    pub(crate) fn check(&self) -> Result<(), BackendError> {
        let bad = |why: String| {
            Err(BackendError::Unavailable(format!(
                "invalid PostgresConfig: {why}"
            )))
        };
        if self.lease.is_zero() || self.timeout.is_zero() || self.sweep_interval.is_zero() {
            return bad(
                "the lease, the timeout and the sweep interval must be longer than zero".into(),
            );
        }
        if self.retention <= self.lease {
            return bad(format!(
                "the retention ({:?}) must be longer than the lease ({:?})",
                self.retention, self.lease
            ));
        }
        if let Some(s) = &self.schema
            && (s.is_empty()
                || s.len() > 63
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return bad(format!(
                "the schema {s:?} must be 1 to 63 lower-case letters, digits or '_'"
            ));
        }
        if self.max_connections == 0 || self.sweep_batch == 0 {
            return bad("max_connections and sweep_batch must be at least 1".into());
        }
        if self.max_key_len == 0 || self.max_key_len > usize::from(u16::MAX) {
            return bad(format!(
                "max_key_len {} must be within 1..=65535",
                self.max_key_len
            ));
        }
        Ok(())
    }
}
