//! Shared helpers for the idemstore benches: workloads that more than one
//! bench or report binary runs.

pub mod alloc;
pub mod cost;
pub mod http;
pub mod mixed;
pub mod open;
pub mod peers;

use idemstore::{Begin, Fingerprint, Response, Store};
use idemstore::{Key, Tenant};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A response with a body of `n` bytes, as an HTTP layer would store it.
pub fn response(n: usize) -> Response {
    Response::new(201, vec![b'x'; n]).with_header("content-type", b"application/json".to_vec())
}

/// Runs `total` begin→complete cycles on fresh keys, split over `callers`
/// threads that start together; returns the wall time.
///
/// `run` distinguishes runs so keys never repeat within one store.
pub fn durable_cycles(
    store: &Store,
    callers: usize,
    total: u64,
    run: u64,
    body: usize,
) -> Duration {
    let per = total.div_ceil(callers as u64).max(1);
    let barrier = Arc::new(Barrier::new(callers + 1));
    let threads: Vec<_> = (0..callers)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            let resp = response(body);
            std::thread::spawn(move || {
                let fp = Fingerprint::of(b"POST /v1/payments");
                barrier.wait();
                for i in 0..per {
                    let key = format!("r{run}-t{t}-{i}");
                    match store.begin(Tenant::new("bench-tenant"), Key::new(&key), fp) {
                        Ok(Begin::Reserved(r)) => r.complete(resp.clone()).expect("complete"),
                        other => panic!("fresh key not reserved: {other:?}"),
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("bench thread");
    }
    start.elapsed()
}

/// Like [`durable_cycles`], but the callers are `callers` async tasks on a
/// multi-threaded tokio runtime with `workers` threads, awaiting
/// `complete_async` — how a service behind an async HTTP server calls the
/// store.
pub fn durable_cycles_async(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    callers: usize,
    total: u64,
    run: u64,
    body: usize,
) -> Duration {
    let per = total.div_ceil(callers as u64).max(1);
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|t| {
                let store = store.clone();
                let resp = response(body);
                tokio::spawn(async move {
                    let fp = Fingerprint::of(b"POST /v1/payments");
                    for i in 0..per {
                        let key = format!("a{run}-t{t}-{i}");
                        match store.begin(Tenant::new("bench-tenant"), Key::new(&key), fp) {
                            Ok(Begin::Reserved(r)) => {
                                r.complete_async(resp.clone()).await.expect("complete")
                            }
                            other => panic!("fresh key not reserved: {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("bench task");
        }
        start.elapsed()
    })
}

/// A [`Storage`](idemstore::storage::Storage) on the real filesystem whose
/// `fdatasync` takes `extra` longer: models a disk with slower flushes (a
/// network block device, a SATA SSD) on a machine whose disk is fast, to see
/// how group commit scales when the flush, not the CPU, is the cost.
#[derive(Debug)]
pub struct SlowSync {
    inner: idemstore::storage::FsStorage,
    extra: Duration,
}

impl SlowSync {
    /// Storage in `dir` with `extra` added to every file `sync_data`.
    pub fn new(dir: &std::path::Path, extra: Duration) -> std::io::Result<Self> {
        Ok(SlowSync {
            inner: idemstore::storage::FsStorage::new(dir)?,
            extra,
        })
    }
}

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn idemstore::storage::StorageFile>,
    extra: Duration,
}

impl idemstore::storage::StorageFile for SlowFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn write_zeros(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.write_zeros(offset, len)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        std::thread::sleep(self.extra);
        self.inner.sync_data()
    }
    fn map(&self, len: u64) -> Option<idemstore::storage::Mapping> {
        self.inner.map(len)
    }
}

impl idemstore::storage::Storage for SlowSync {
    fn location(&self) -> std::path::PathBuf {
        self.inner.location()
    }
    fn lock(&self) -> std::io::Result<idemstore::storage::LockOutcome> {
        self.inner.lock()
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.create(name)?,
            extra: self.extra,
        }))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn idemstore::storage::StorageFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open(name)?,
            extra: self.extra,
        }))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir()
    }
}

/// Runs `chunk(run, n)` — a batch of `n` cycles with distinct keys per `run` —
/// until `secs` have passed; returns cycles per second.
pub fn cycles_for(secs: f64, callers: usize, mut chunk: impl FnMut(u64, u64)) -> f64 {
    let per_chunk = (callers as u64 * 50).max(2_000);
    let start = Instant::now();
    let (mut done, mut run) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        chunk(run, per_chunk);
        done += per_chunk.div_ceil(callers as u64) * callers as u64;
        run += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The tokio runtime every async workload here runs on: 2 workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
