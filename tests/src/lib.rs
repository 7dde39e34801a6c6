//! # idemstore-tests
//!
//! The end-to-end suites, in one crate that depends on every other, so that
//! each backend crate keeps its unit tests and one suite covers every
//! backend (see `tests/`):
//!
//! - `conformance.rs`: the contract, one generic suite run against the
//!   embedded engine, one Redis node, a Redis Cluster, and a Redis Cluster
//!   waiting for a replica;
//! - `once.rs`: "runs once" as a real server process over TCP (the
//!   `once_probe` binary) under client timeouts, panics, a full tmpfs and
//!   a paused Redis;
//! - `crash.rs`: real `kill -9`s of a child completing keys;
//! - `replicas.rs`: several replicas on one Redis, Redis restarted;
//! - `disk_full.rs`: a real full disk under the layer;
//! - `payments.rs`: the `payments` example as a process;
//! - `cluster.rs`: `payments` processes on a Redis Cluster, with a master
//!   killed and a slot migrated under load;
//! - `idemctl.rs`: `idemctl` on the stores of `payments` processes, killed
//!   with requests in flight, running beside it, or stopped;
//! - `proxy.rs`: `idemproxy` in front of a Python service, on every
//!   backend: the layer's behaviour table through a real proxy, and the
//!   upstream's failures.
//!
//! This library holds what those suites share:
//!
//! - `http`: a server process's address, one HTTP/1 exchange, its [`Reply`];
//! - `redis`: a Redis node or cluster of a test's own;
//! - `payments`: the `payments` example as a child process, and the
//!   binaries (`payments`, `idemctl`) built for the run;
//! - `proxy`: `idemproxy` and its Python upstream as child processes;
//! - `tmpfs`: a real small file system that fills up.

mod http;
mod payments;
mod proxy;
mod redis;
mod tmpfs;

pub use http::{Reply, listening_addr, send, try_send};
pub use payments::{Payments, idemctl_binary, payments_binary};
pub use proxy::{Orders, Proxy, idemproxy_binary};
pub use redis::{ClusterNode, RedisCluster, RedisServer};
pub use tmpfs::Tmpfs;
