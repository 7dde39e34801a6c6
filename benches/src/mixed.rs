//! W3: the mixed workload over the HTTP layer's `Backend` trait, so the
//! embedded store and Redis run the very same code: 80% new keys (begin →
//! complete, 512 B body), 15% replays of a key this task completed earlier,
//! 5% conflicting duplicates (the same key with another request body:
//! `Mismatch`, answered 422 by the layer).

use idemstore::{Fingerprint, Response};
use idemstore::{Key, Tenant};
use idemstore_http::{Backend, Lease, Outcome};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the mix from `tasks` tasks for `secs`; returns operations per second.
pub fn run<B: Backend>(rt: &tokio::runtime::Runtime, backend: B, tasks: usize, secs: f64) -> f64 {
    let backend = Arc::new(backend);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let fp = Fingerprint::of(b"POST /v1/payments amount=100");
                    let other = Fingerprint::of(b"POST /v1/payments amount=999");
                    let body = vec![b'x'; 512];
                    let (mut n, mut completed) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        // A cheap deterministic spread of 0..100.
                        let roll = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) % 100;
                        if completed == 0 || roll < 80 {
                            let key = format!("mix-{t}-{completed}");
                            match backend
                                .begin(Tenant::new(b"bench"), Key::new(key.as_bytes()), fp)
                                .await
                            {
                                Ok(Outcome::Reserved(l)) => l
                                    .complete(Response::new(201, body.clone()))
                                    .await
                                    .expect("complete"),
                                Ok(_) => panic!("a fresh key was not reserved"),
                                Err(e) => panic!("begin: {e}"),
                            }
                            completed += 1;
                        } else {
                            let key = format!("mix-{t}-{}", (n * 7919) % completed);
                            let (f, want_replay) = if roll < 95 {
                                (fp, true)
                            } else {
                                (other, false)
                            };
                            match backend
                                .begin(Tenant::new(b"bench"), Key::new(key.as_bytes()), f)
                                .await
                            {
                                Ok(Outcome::Replay(_)) if want_replay => {}
                                Ok(Outcome::Mismatch(_)) if !want_replay => {}
                                Ok(_) => panic!("a completed key did not replay or mismatch"),
                                Err(e) => panic!("begin: {e}"),
                            }
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.await.expect("task");
        }
        total as f64 / start.elapsed().as_secs_f64()
    })
}
