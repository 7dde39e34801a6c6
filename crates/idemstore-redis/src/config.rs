//! [`RedisConfig`]: how the backend behaves, and the checks made on it
//! before connecting.

use idemstore_http::BackendError;
use std::time::Duration;

/// How the Redis backend behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Prefix of every key, so several services can share one Redis
    /// (default `idem`). It may not contain `{` or `}`: the backend's own
    /// hash tag follows it.
    pub prefix: String,
    /// How long a completed response is replayed (default 24 h).
    pub retention: Duration,
    /// How long a reservation holds its key unless renewed (default 60 s).
    pub lease: Duration,
    /// Longest a single Redis call may take before it fails (default 2 s).
    /// A call that waits for replicas may take this plus twice their timeout.
    pub timeout: Duration,
    /// Longest key accepted, in bytes (default 255).
    pub max_key_len: usize,
    /// Replicas that must hold every write before it counts (default none:
    /// see [`RedisConfig::wait_replicas`]).
    pub wait: Option<WaitReplicas>,
    /// Connections (to each node, on a cluster) shared by all calls,
    /// round-robin (default 4). Each is multiplexed; more than one keeps a
    /// call that waits for replicas from holding up the others.
    pub connections: usize,
    /// For this long after a completed record expires, a request with its
    /// key is refused (`Outcome::Expired`) instead of running again
    /// (default `None`: an expired key is free). Each completion then also
    /// writes a small tombstone key beside its hash (same hash slot, in the
    /// same script), which Redis expires at the grace's end; the hash
    /// itself still expires with the retention.
    pub refuse_expired_keys_for: Option<Duration>,
}

/// Replicas that must acknowledge a write, and how long to wait for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitReplicas {
    /// How many replicas of the key's master must hold the write.
    pub replicas: u32,
    /// Longest wait for them; fewer in time is a store failure.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "idem".into(),
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            max_key_len: 255,
            wait: None,
            connections: 4,
            refuse_expired_keys_for: None,
        }
    }
}

impl RedisConfig {
    /// Sets [`RedisConfig::refuse_expired_keys_for`].
    pub fn refuse_expired_keys_for(mut self, grace: Duration) -> Self {
        self.refuse_expired_keys_for = Some(grace);
        self
    }

    /// The grace in ms, 0 when off (what the scripts take).
    pub(crate) fn grace_ms(&self) -> u64 {
        self.refuse_expired_keys_for.map_or(0, crate::ms)
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = p.into();
        self
    }
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
    /// Sets how many connections are shared (at least 1).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }
    /// Counts a write only once `replicas` replicas of its master hold it
    /// (Redis `WAIT`, sent right after the write on the same connection),
    /// waiting at most `timeout` for them. Applies to every write: a
    /// reservation (before the handler runs), a completion (before it is
    /// acknowledged), a renewal, and a replay (which first re-writes the
    /// record's state, so the replayed record itself is confirmed).
    /// Fewer replicas in time is a store failure: a reservation is given
    /// back and answered 503 without running the handler; a completion
    /// stays reserved and is retried in the background (503 until then); a
    /// replay is answered 503. `0` replicas turns waiting off.
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = (replicas > 0).then_some(WaitReplicas { replicas, timeout });
        self
    }

    /// Refuses settings the backend cannot work with, saying what to do.
    pub(crate) fn check(&self) -> Result<(), BackendError> {
        let bad = |why: String| {
            Err(BackendError::Unavailable(format!(
                "invalid RedisConfig: {why}"
            )))
        };
        if self.prefix.contains(['{', '}']) {
            return bad(format!(
                "the prefix {:?} contains '{{' or '}}'; the backend adds its own hash tag \
                 after the prefix (so each key's data stays in one cluster slot): use a \
                 prefix without braces",
                self.prefix
            ));
        }
        if self
            .refuse_expired_keys_for
            .is_some_and(|g| g < Duration::from_millis(1))
        {
            return bad(
                "refuse_expired_keys_for is under 1 ms; leave it unset to free expired keys".into(),
            );
        }
        if self.connections == 0 {
            return bad("connections is 0; use at least 1".into());
        }
        if self.lease.is_zero() || self.timeout.is_zero() || self.retention.is_zero() {
            return bad("the lease, the timeout and the retention must be longer than zero".into());
        }
        if let Some(w) = self.wait
            && w.timeout.is_zero()
        {
            return bad(
                "the replica wait timeout is 0, which Redis reads as 'wait forever'; \
                 give a bound (e.g. 500 ms)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The longest a call may take: the timeout, plus the replica wait
    /// twice when it waits (a node that does not know the script yet
    /// answers the first try with NOSCRIPT after its `WAIT` ran).
    pub(crate) fn call_timeout(&self, waits: bool) -> Duration {
        match self.wait {
            Some(w) if waits => self.timeout + w.timeout * 2,
            _ => self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_with_braces_is_refused_saying_why() {
        for p in ["a{b", "x}", "{t}"] {
            let e = RedisConfig::default()
                .prefix(p)
                .check()
                .unwrap_err()
                .to_string();
            assert!(e.contains("hash tag") && e.contains(p), "{e}");
        }
        assert!(RedisConfig::default().prefix("orders:v2").check().is_ok());
    }

    #[test]
    fn an_unbounded_replica_wait_and_no_connections_are_refused() {
        let e = RedisConfig::default()
            .wait_replicas(1, Duration::ZERO)
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("wait forever"), "{e}");
        assert!(RedisConfig::default().connections(0).check().is_err());
        assert_eq!(
            RedisConfig::default()
                .wait_replicas(0, Duration::from_secs(1))
                .wait,
            None
        );
    }
}
