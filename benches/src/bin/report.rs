//! A quick side-by-side report of every workload of the performance issue,
//! idemstore beside its peers in one run, printed as markdown with ratios.
//! W1: the durable begin→complete cycle (512 B body, fresh keys) at 1, 8 and
//! 64 concurrent callers.
//!
//! `cargo run --release -p idemstore-benches --bin report -- [SECONDS_PER_CELL] [KEYS]`
//!
//! Peers, each written the way a competent user would build an idempotency
//! store on it:
//! - raw limit: append the same bytes a batch of `callers` completions writes,
//!   then fdatasync, in a loop (the disk's ceiling);
//! - sled 0.34: compare-and-swap to reserve, insert on completion, `flush`
//!   after the completion (idemstore's guarantee), and a variant that also
//!   flushes the reservation;
//! - redb: one write transaction per step (reserve; complete with a row in
//!   an expiry table, redb having no TTL), each committed with its default
//!   immediate durability; and a batched variant, where one committer thread
//!   applies every queued step in one transaction (group commit by hand);
//! - the OS-thread floor: group commit with no store at all (callers queue
//!   and park, one thread appends and fdatasyncs, another wakes them): at 64
//!   callers, where the CPUs are the limit, what parking and waking the
//!   threads costs with no store work at all;
//! - Redis 7 on loopback (started here when `redis-server` is installed),
//!   with `appendfsync always` and `everysec`, two ways: as the issue
//!   describes the peer (`SET NX PX` to reserve, a script to complete with
//!   fencing, one multiplexed connection; the targets use this one), and
//!   through this project's Redis backend (one Lua script per operation).
//!
//! W2: replay latency (p50/p99) in-process, beside a Redis GET on loopback.
//!
//! W3: the mixed workload on the `Backend` trait (embedded and Redis).
//! W4/W5: open time, heap and disk for KEYS live keys (the `index_memory`
//! binary, run as a child process). W6: HTTP over loopback, bare vs layer.
//! Last, the performance issue's targets with what was measured.
//!
//! `scripts/report.sh [SECONDS_PER_CELL] [KEYS]` builds and runs it.
//!
//! Then every ratio target again, paired: `PAIRED_ROUNDS` (5) rounds, each
//! running W1 at 64 (threads, async tasks, raw limit, both sled variants,
//! the OS-thread floor, redb, Redis always with `SET NX PX`) and W6 (bare and
//! Sync) back to back, so that the machine's drift hits both sides of a ratio
//! alike; the targets table uses their medians, and "bound" rows give the
//! ceilings the machine puts on the W1 targets.
//!
//! Environment: `REPORT_ONLY=w1,w2,w3,w45,w6,pairs` runs only those sections;
//! `W6_CONNS=N` changes W6's connection count (64 by default, the issue's);
//! `W6_HANDLER=trivial` serves a stateless JSON 201 instead of the
//! `payments` example's handler;
//! `GCW_US=N` sets W6's stores' `group_commit_window` in µs.

use idemstore::{Config, Durability, Fingerprint, Response, Store};
use idemstore_benches::{cycles_for, durable_cycles};
use idemstore_http::{Backend, Lease, Outcome};
use redb::ReadableTable;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const CALLERS: [usize; 3] = [1, 8, 64];
const BODY: usize = 512;

/// Runs `op(thread, i)` from `callers` threads for about `secs`; returns ops/s.
fn threads(callers: usize, secs: f64, op: impl Fn(usize, u64) + Send + Sync + 'static) -> f64 {
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(callers + 1));
    let deadline = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let (op, barrier, deadline) = (op.clone(), barrier.clone(), deadline.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let end = *deadline.get().expect("set before release");
                let mut n = 0u64;
                while Instant::now() < end {
                    op(t, n);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let start = Instant::now();
    let _ = deadline.set(start + Duration::from_secs_f64(secs));
    barrier.wait();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn idemstore(d: Durability, callers: usize, secs: f64) -> f64 {
    with_store(Config::default().durability(d), |store| {
        cycles_for(secs, callers, |run, n| {
            durable_cycles(store, callers, n, run, BODY);
        })
    })
}

/// W1 with the callers as async tasks on a 2-worker tokio runtime awaiting
/// `complete_async`, as a service behind an async HTTP server calls it.
fn idemstore_async(d: Durability, callers: usize, secs: f64) -> f64 {
    let rt = runtime();
    with_store(Config::default().durability(d), |store| {
        cycles_for(secs, callers, |run, n| {
            idemstore_benches::durable_cycles_async(&rt, store, callers, n, run, BODY);
        })
    })
}

/// The tokio runtime every async workload here runs on: 2 workers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` on a store opened with `cfg` in a fresh directory, then closes it.
fn with_store<R>(cfg: Config, f: impl FnOnce(&Store) -> R) -> R {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store = Store::open(dir.path(), cfg).expect("open");
    let r = f(&store);
    store.close().expect("close");
    r
}

/// W6 behind the layer: the handler on a store with durability `d`;
/// requests/s. `GCW_US=N` sets the store's `group_commit_window` in µs.
fn layered(rt: &tokio::runtime::Runtime, d: Durability, conns: usize, secs: f64) -> f64 {
    let mut cfg = Config::default().durability(d);
    if let Some(us) = std::env::var("GCW_US").ok().and_then(|v| v.parse().ok()) {
        cfg = cfg.group_commit_window(Duration::from_micros(us));
    }
    with_store(cfg, |store| {
        idemstore_benches::http::run(rt, idemstore_benches::http::layered(store), conns, secs)
    })
}

/// `rounds` rounds of `cells`, each round running every cell once, back to
/// back: a drift in the machine's speed then hits both sides of a ratio
/// alike. Returns each cell's values, by round.
fn paired(rounds: usize, cells: &[&dyn Fn() -> f64]) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); cells.len()];
    for round in 0..rounds {
        for (i, cell) in cells.iter().enumerate() {
            out[i].push(cell());
        }
        eprintln!(
            "paired round {round}: {:?}",
            out.iter().map(|v| v[round]).collect::<Vec<_>>()
        );
    }
    out
}

/// A named measurement of the paired rounds.
type Cell<'a> = (&'static str, Box<dyn Fn() -> f64 + 'a>);

/// Median, minimum and maximum of the per-round ratios `a[i] / b[i]`.
fn ratio_stats(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    if r.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    r.sort_by(f64::total_cmp);
    (r[r.len() / 2], r[0], r[r.len() - 1])
}

/// The durability modes the workloads compare, with their labels.
fn modes() -> [(&'static str, Durability); 3] {
    [
        ("Sync", Durability::Sync),
        (
            "Periodic(100 ms)",
            Durability::Periodic(Duration::from_millis(100)),
        ),
        ("None", Durability::None),
    ]
}

/// A two-column table of `rows` with a third column `ratio(first, this)`,
/// followed by `unit`.
fn ratio_table(
    out: &mut impl Write,
    title: &str,
    columns: &str,
    rows: &[(String, f64)],
    (ratio, unit): (impl Fn(f64, f64) -> f64, &str),
) {
    let _ = writeln!(out, "\n{title}\n");
    let _ = writeln!(out, "{columns}");
    let _ = writeln!(out, "| --- | --- | --- |");
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "| {name} | {r:.0} | {:.2}{unit} |",
            ratio(rows[0].1, *r)
        );
    }
}

fn raw(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let f = std::fs::File::create(dir.path().join("raw")).expect("create");
    let buf = vec![0x5au8; 640 * callers];
    let (mut off, mut n) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        f.write_all_at(&buf, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += buf.len() as u64;
        n += callers as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// sled 0.34: compare-and-swap to reserve, insert to complete, `flush` after
/// the completion; with `flush_reservation`, after the reservation too.
///
/// One flush per cycle is the peer that matches idemstore's `Sync`, which
/// does not fsync a reservation before `begin` returns (a reservation lost
/// in a crash is no worse than one that survives it: its lease runs out
/// and a retry runs the request again either way). Note that sled's
/// `flush` on Linux is `sync_file_range`, which neither flushes the
/// disk's write cache nor syncs metadata: it costs less than the
/// `fdatasync` idemstore and the raw limit pay, and promises less.
fn sled(callers: usize, secs: f64, flush_reservation: bool) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let body = vec![b'x'; BODY];
    threads(callers, secs, move |t, i| {
        let key = format!("t{t}-{i}");
        let reserved = db
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&b"pending"[..]))
            .expect("cas");
        assert!(reserved.is_ok(), "fresh key");
        if flush_reservation {
            db.flush().expect("flush");
        }
        db.insert(&key, &body[..]).expect("insert");
        db.flush().expect("flush");
    })
}

/// Group commit with nothing else, for callers that are OS threads blocking
/// until their write is fsynced. At 64 callers the CPUs are the limit and
/// this is what parking and waking the threads costs without any store
/// work; at a few callers it is no ceiling (each batch takes an extra
/// thread hop here that idemstore's writer avoids when idle). `callers`
/// threads each queue themselves and park; a committer thread sleeps until
/// the queue is non-empty, takes it, appends the batch's bytes (640 B per
/// caller, as [`raw`]) and fdatasyncs; a third thread unparks the batch
/// meanwhile, so waking overlaps the next fsync (as idemstore's settler
/// does). No index, no encoding, no records.
fn thread_floor(callers: usize, secs: f64) -> f64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    /// A parked caller and the flag that releases it.
    type Waiting = (std::thread::Thread, Arc<AtomicBool>);
    let queue: Arc<(Mutex<Vec<Waiting>>, Condvar)> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Waiting>>();
    let waker = std::thread::spawn(move || {
        for batch in rx {
            for (t, done) in batch {
                done.store(true, Ordering::Release);
                t.unpark();
            }
        }
    });
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let file = std::fs::File::create(dir.path().join("floor")).expect("create");
    let committer = {
        let (queue, stop) = (queue.clone(), stop.clone());
        std::thread::spawn(move || {
            let record = vec![0x5au8; 640];
            let mut off = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = {
                    let mut q = queue.0.lock().expect("queue");
                    if q.is_empty() {
                        // Bounded, so that `stop` is seen.
                        q = queue
                            .1
                            .wait_timeout(q, Duration::from_millis(1))
                            .expect("queue")
                            .0;
                    }
                    std::mem::take(&mut *q)
                };
                if batch.is_empty() {
                    continue;
                }
                let buf = record.repeat(batch.len());
                file.write_all_at(&buf, off).expect("write");
                file.sync_data().expect("fdatasync");
                off += buf.len() as u64;
                tx.send(batch).expect("waker");
            }
        })
    };
    let rate = threads(callers, secs, move |_, _| {
        let done = Arc::new(AtomicBool::new(false));
        {
            let mut q = queue.0.lock().expect("queue");
            q.push((std::thread::current(), done.clone()));
            if q.len() == 1 {
                queue.1.notify_one();
            }
        }
        while !done.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = committer.join();
    let _ = waker.join();
    rate
}

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("idem");
/// TTL emulation: (expires_at ms, key) → (), swept by a range delete.
const EXPIRY: redb::TableDefinition<(u64, &str), ()> = redb::TableDefinition::new("expiry");

fn expires_at() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    u64::try_from(now).unwrap_or(u64::MAX) + 24 * 3600 * 1000
}

/// One redb step: reserve (`value` None: the key must be absent) or
/// complete, with its expiry row, in the transaction `txn`.
fn redb_step(txn: &redb::WriteTransaction, key: &str, value: Option<&[u8]>) {
    let mut table = txn.open_table(TABLE).expect("table");
    match value {
        None => {
            assert!(table.get(key).expect("get").is_none(), "fresh key");
            table.insert(key, &b"pending"[..]).expect("insert");
        }
        Some(v) => {
            table.insert(key, v).expect("insert");
            let mut exp = txn.open_table(EXPIRY).expect("expiry table");
            exp.insert((expires_at(), key), ()).expect("expiry");
        }
    }
}

/// redb, one write transaction per step, each committed with redb's default
/// (immediate) durability.
fn redb(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = Arc::new(redb::Database::create(dir.path().join("db")).expect("redb"));
    let body = vec![b'x'; BODY];
    threads(callers, secs, move |t, i| {
        let key = format!("t{t}-{i}");
        for v in [None, Some(&body[..])] {
            let txn = db.begin_write().expect("txn");
            redb_step(&txn, &key, v);
            txn.commit().expect("commit");
        }
    })
}

type RedbJob = (String, Option<Vec<u8>>, std::sync::mpsc::SyncSender<()>);

/// redb with group commit by hand: callers hand their steps to one
/// committer thread, which applies everything queued in one transaction and
/// commits it (immediate durability), then answers them all.
fn redb_batched(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = redb::Database::create(dir.path().join("db")).expect("redb");
    let (tx, rx) = std::sync::mpsc::channel::<RedbJob>();
    let committer = std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            let txn = db.begin_write().expect("txn");
            for (key, v, _) in &jobs {
                redb_step(&txn, key, v.as_deref());
            }
            txn.commit().expect("commit");
            for (_, _, done) in jobs {
                let _ = done.send(());
            }
        }
    });
    let body = vec![b'x'; BODY];
    let tx2 = tx.clone();
    let r = threads(callers, secs, move |t, i| {
        let key = format!("t{t}-{i}");
        for v in [None, Some(body.clone())] {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            tx2.send((key.clone(), v, done)).expect("committer");
            wait.recv().expect("commit");
        }
    });
    drop(tx);
    committer.join().expect("committer");
    r
}

/// A redis-server of our own on a free loopback port.
struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(appendfsync: &str) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir_in(".").ok()?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", appendfsync])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Numbers the Redis runs, so that each uses keys of its own.
static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `op(task, i)` from `callers` tokio tasks for about `secs`; returns
/// ops/s (the async twin of `threads`).
async fn tasks<F, Fut>(callers: usize, secs: f64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    op(t, n).await;
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
}

/// W1 through this project's Redis backend (a Lua script per step).
fn redis(server: &RedisServer, callers: usize, secs: f64) -> f64 {
    // Fresh keys in every call (the server lives for the whole report).
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    runtime().block_on(async {
        let url = format!("redis://127.0.0.1:{}", server.port);
        let backend =
            idemstore_redis::RedisBackend::connect(&url, idemstore_redis::RedisConfig::default())
                .await
                .expect("connect");
        tasks(callers, secs, move |t, n| {
            let backend = backend.clone();
            async move {
                let key = format!("r{run}-t{t}-{n}");
                match backend
                    .begin(b"bench", key.as_bytes(), Fingerprint::of(b"r"))
                    .await
                {
                    Ok(Outcome::Reserved(l)) => l
                        .complete(Response::new(201, vec![b'x'; BODY]))
                        .await
                        .expect("complete"),
                    _ => panic!("fresh key"),
                }
            }
        })
        .await
    })
}

/// Completes a reservation made with `SET NX PX`, fenced: only while the key
/// still holds this reservation's token.
const SETNX_COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// W1 on plain Redis, as the performance issue describes the peer: `SET key
/// token NX PX lease` to reserve, a script to complete with fencing (the
/// response replaces the token only if the token is still there), one
/// multiplexed async connection shared by `callers` tasks.
fn redis_setnx(server: &RedisServer, callers: usize, secs: f64) -> f64 {
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    runtime().block_on(async {
        let url = format!("redis://127.0.0.1:{}", server.port);
        let conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let complete = redis::Script::new(SETNX_COMPLETE);
        tasks(callers, secs, move |t, n| {
            let (mut conn, complete) = (conn.clone(), complete.clone());
            async move {
                let key = format!("setnx-r{run}-t{t}-{n}");
                let token = format!("pending:{t}:{n}");
                let reserved: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .expect("SET NX");
                assert!(reserved.is_some(), "fresh key");
                let done: i64 = complete
                    .key(&key)
                    .arg(&token)
                    .arg(&[b'x'; BODY][..])
                    .arg(86_400_000)
                    .invoke_async(&mut conn)
                    .await
                    .expect("complete");
                assert_eq!(done, 1, "fenced out of a fresh key");
            }
        })
        .await
    })
}

/// p50 and p99 of `n` timed calls of `f`, in µs.
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut t: Vec<Duration> = (0..n)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed()
        })
        .collect();
    t.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(t[n / 2]), us(t[n * 99 / 100]))
}

/// W2: `begin` on completed keys (1 KB bodies), one caller, in-process; and a
/// plain Redis GET of a 1 KB value over loopback for scale.
fn replay(redis: Option<&RedisServer>) -> Vec<(String, f64, f64)> {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store =
        Store::open(dir.path(), Config::default().durability(Durability::None)).expect("open");
    let keys = 10_000;
    let fp = Fingerprint::of(b"r");
    for i in 0..keys {
        let Ok(idemstore::Begin::Reserved(r)) = store.begin("t", format!("k{i}"), fp) else {
            panic!("fresh key")
        };
        r.complete(Response::new(201, vec![b'x'; 1024]))
            .expect("complete");
    }
    let mut out = Vec::new();
    let (p50, p99) = percentiles(100_000, |i| {
        let k = format!("k{}", (i * 7919) % keys);
        assert!(matches!(
            store.begin("t", k, fp),
            Ok(idemstore::Begin::Replay(_))
        ));
    });
    out.push(("idemstore replay (in-process begin)".to_owned(), p50, p99));
    if let Some(server) = redis {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).expect("url");
        let mut conn = client.get_connection().expect("connect");
        let _: () = redis::cmd("SET")
            .arg("v")
            .arg(vec![b'x'; 1024])
            .query(&mut conn)
            .expect("set");
        let (p50, p99) = percentiles(20_000, |_| {
            let v: Vec<u8> = redis::cmd("GET").arg("v").query(&mut conn).expect("get");
            assert_eq!(v.len(), 1024);
        });
        out.push(("Redis GET over loopback (1 KB)".to_owned(), p50, p99));
    }
    out
}

/// W4/W5 from the `index_memory` binary beside this one (it installs a
/// counting allocator, which would tax every other workload here).
fn open_figures(keys: u64, body: usize) -> Option<Vec<(String, f64)>> {
    let exe = std::env::current_exe().ok()?.with_file_name("index_memory");
    let out = std::process::Command::new(&exe)
        .args([keys.to_string(), body.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!(
                "W4/W5: skipped: {} did not run (build it: cargo build --release -p idemstore-benches --bins)",
                exe.display()
            );
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("figures: "))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

fn get(f: &[(String, f64)], k: &str) -> f64 {
    f.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v)
}

fn main() {
    let arg = |i: usize, d: f64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let secs = arg(1, 2.0);
    let keys: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut out = std::io::stdout().lock();

    // REPORT_ONLY=w1,w2,w3,w45,w6 runs only those sections.
    let only = std::env::var("REPORT_ONLY").ok();
    let want = |w: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == w));

    // W1.
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let w1 = want("w1");
    let mut row = |name: &str, f: &dyn Fn(usize) -> f64| {
        if !w1 {
            return;
        }
        let cells: Vec<f64> = CALLERS.iter().map(|&c| f(c)).collect();
        eprintln!("{name}: {cells:?}");
        rows.push((name.to_owned(), cells));
    };
    for (i, (mode, d)) in modes().into_iter().enumerate() {
        row(&format!("idemstore {mode}"), &|c| idemstore(d, c, secs));
        if i == 0 {
            row(
                &format!("idemstore {mode}, async tasks (2 tokio workers)"),
                &|c| idemstore_async(d, c, secs),
            );
        }
    }
    row("raw limit (append + fdatasync, batch = callers)", &|c| {
        raw(c, secs)
    });
    row("sled 0.34, one flush (CAS, insert, flush)", &|c| {
        sled(c, secs, false)
    });
    row(
        "sled 0.34, flush per step (CAS, flush, insert, flush)",
        &|c| sled(c, secs, true),
    );
    row("OS-thread floor (group commit, no store)", &|c| {
        thread_floor(c, secs)
    });
    row("redb (a write txn per step, expiry table)", &|c| {
        redb(c, secs)
    });
    row("redb batched (group commit by hand)", &|c| {
        redb_batched(c, secs)
    });
    let mut servers = Vec::new();
    for mode in ["always", "everysec"] {
        let Some(server) = RedisServer::start(mode) else {
            eprintln!(
                "Redis {mode}: skipped: redis-server is not installed (scripts/test.sh installs it)"
            );
            continue;
        };
        row(
            &format!("Redis 7, appendfsync {mode} (SET NX PX, complete script)"),
            &|c| redis_setnx(&server, c, secs),
        );
        row(
            &format!("Redis 7, appendfsync {mode}, idemstore-redis backend (Lua)"),
            &|c| redis(&server, c, secs),
        );
        servers.push(server);
    }
    let ours = rows
        .first()
        .map_or_else(|| vec![f64::NAN; 3], |r| r.1.clone());
    if w1 {
        let _ = writeln!(
            out,
            "W1 durable begin→complete, {BODY} B body, fresh keys, cycles/s ({secs} s per cell)\n"
        );
        let _ = writeln!(
            out,
            "| store | 1 caller | 8 callers | 64 callers | idemstore Sync ÷ this, at 64 |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for (name, cells) in &rows {
            let c: Vec<String> = cells.iter().map(|v| format!("{v:.0}")).collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.2}× |",
                c[0],
                c[1],
                c[2],
                ours[2] / cells[2]
            );
        }
    }

    // W2.
    let w2 = if want("w2") {
        replay(servers.first())
    } else {
        Vec::new()
    };
    if !w2.is_empty() {
        let _ = writeln!(out, "\nW2 replay, one caller, 1 KB body\n");
        let _ = writeln!(out, "| lookup | p50 µs | p99 µs |");
        let _ = writeln!(out, "| --- | --- | --- |");
    }
    for (name, p50, p99) in &w2 {
        let _ = writeln!(out, "| {name} | {p50:.2} | {p99:.2} |");
    }

    // W3.
    let rt = runtime();
    let mut w3: Vec<(String, f64)> = Vec::new();
    let w3_on = want("w3");
    for (mode, d) in modes().into_iter().filter(|_| w3_on) {
        let r = with_store(Config::default().durability(d), |store| {
            idemstore_benches::mixed::run(&rt, idemstore_http::Embedded(store.clone()), 64, secs)
        });
        eprintln!("W3 idemstore {mode}: {r:.0}");
        w3.push((format!("idemstore {mode}"), r));
    }
    for (server, mode) in servers.iter().zip(["always", "everysec"]).filter(|_| w3_on) {
        let url = format!("redis://127.0.0.1:{}", server.port);
        let backend = rt
            .block_on(idemstore_redis::RedisBackend::connect(
                &url,
                idemstore_redis::RedisConfig::default(),
            ))
            .expect("connect");
        let r = idemstore_benches::mixed::run(&rt, backend, 64, secs);
        eprintln!("W3 Redis {mode}: {r:.0}");
        w3.push((format!("Redis 7, appendfsync {mode}"), r));
    }
    if w3_on {
        ratio_table(
            &mut out,
            "W3 mixed (80% new, 15% replay, 5% conflicting duplicate), 64 tasks on the `Backend` trait, ops/s",
            "| store | ops/s | idemstore Sync ÷ this |",
            &w3,
            (|first, r| first / r, "×"),
        );
    }

    // W6.
    let w6_on = want("w6");
    // W6_CONNS changes the connection count (the issue's figure is 64).
    let conns: usize = std::env::var("W6_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut w6: Vec<(String, f64)> = Vec::new();
    if w6_on {
        w6.push((
            "bare handler".to_owned(),
            idemstore_benches::http::run(&rt, idemstore_benches::http::router(), conns, secs),
        ));
    }
    for (mode, d) in modes().into_iter().filter(|_| w6_on) {
        let r = layered(&rt, d, conns, secs);
        w6.push((format!("behind the layer, {mode}"), r));
    }
    if w6_on {
        eprintln!("W6: {w6:?}");
        ratio_table(
            &mut out,
            &format!(
                "W6 HTTP over loopback, the `payments` example's POST /v1/payments{}, {conns} keep-alive connections, fresh keys, requests/s",
                if std::env::var("W6_HANDLER").is_ok_and(|h| h == "trivial") {
                    " (W6_HANDLER=trivial: a stateless JSON 201 instead)"
                } else {
                    ""
                }
            ),
            "| server | req/s | ÷ bare |",
            &w6,
            (|first, r| r / first, ""),
        );
    }

    // W4, W5.
    let f = if want("w45") {
        open_figures(keys, BODY)
    } else {
        None
    };
    if let Some(f) = &f {
        let k = get(f, "keys");
        let disk = get(f, "segments") + get(f, "hints");
        let _ = writeln!(
            out,
            "\nW4/W5 a store of {k:.0} live keys ({BODY} B bodies; filled in {:.0} s)\n",
            get(f, "fill")
        );
        let rows = [
            (
                "open from hint files (median of 3; the first, right after the fill)",
                format!(
                    "{:.2} s ({:.2} s)",
                    get(f, "open_hints"),
                    get(f, "open_hints_first")
                ),
            ),
            (
                "open from segments (hints deleted)",
                format!("{:.2} s", get(f, "open_scan")),
            ),
            (
                "heap held by the open store",
                format!("{:.1} B/key", get(f, "heap")),
            ),
            (
                "peak extra heap while opening",
                format!("{:.1} B/key", get(f, "peak")),
            ),
            (
                "disk: segments + hints",
                format!(
                    "{:.1} + {:.1} B/key",
                    get(f, "segments") / k,
                    get(f, "hints") / k
                ),
            ),
            (
                "disk ÷ record bytes",
                format!("{:.3}", disk / get(f, "records")),
            ),
            (
                "after the TTL: freed / left",
                format!("{:.0} MB / {:.0} B", get(f, "freed") / 1e6, get(f, "left")),
            ),
        ];
        let _ = writeln!(out, "| figure | value |");
        let _ = writeln!(out, "| --- | --- |");
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
    }

    // Paired ratios: the ratio targets, each side measured back to back.
    let rounds: usize = std::env::var("PAIRED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // (ratio name, (median, lowest, highest)); W1 names are "how ÷ peer".
    let mut pairs: Vec<(String, (f64, f64, f64))> = Vec::new();
    if want("pairs") {
        let mut cells: Vec<Cell<'_>> = vec![
            ("raw limit", Box::new(|| raw(64, secs))),
            (
                "threads",
                Box::new(|| idemstore(Durability::Sync, 64, secs)),
            ),
            (
                "async tasks",
                Box::new(|| idemstore_async(Durability::Sync, 64, secs)),
            ),
            ("sled, one flush", Box::new(|| sled(64, secs, false))),
            ("sled, flush per step", Box::new(|| sled(64, secs, true))),
            ("OS-thread floor", Box::new(|| thread_floor(64, secs))),
            ("redb", Box::new(|| redb(64, secs))),
        ];
        // The first server runs with appendfsync always.
        if let Some(server) = servers.first() {
            cells.push((
                "Redis 7 always (SET NX PX)",
                Box::new(move || redis_setnx(server, 64, secs)),
            ));
        }
        cells.push((
            "W6 bare",
            Box::new(|| {
                idemstore_benches::http::run(&rt, idemstore_benches::http::router(), conns, secs)
            }),
        ));
        cells.push((
            "W6 Sync",
            Box::new(|| layered(&rt, Durability::Sync, conns, secs)),
        ));
        let fns: Vec<&dyn Fn() -> f64> = cells.iter().map(|(_, f)| f.as_ref()).collect();
        let p = paired(rounds, &fns);
        let col = |name: &str| cells.iter().position(|(n, _)| *n == name);
        for how in ["threads", "async tasks"] {
            for (peer, _) in cells
                .iter()
                .skip(3)
                .take_while(|(n, _)| !n.starts_with("W6"))
            {
                if let (Some(a), Some(b)) = (col(how), col(peer)) {
                    pairs.push((
                        format!("W1 Sync @64 {how} ÷ {peer}"),
                        ratio_stats(&p[a], &p[b]),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (col(how), col("raw limit")) {
                pairs.push((
                    format!("W1 Sync @64 {how} ÷ raw limit"),
                    ratio_stats(&p[a], &p[b]),
                ));
            }
        }
        // What bounds the W1 targets on this machine, whatever the store.
        for (a, b) in [
            ("OS-thread floor", "raw limit"),
            ("raw limit", "sled, one flush"),
            ("raw limit", "sled, flush per step"),
        ] {
            if let (Some(i), Some(j)) = (col(a), col(b)) {
                pairs.push((format!("bound: {a} ÷ {b}"), ratio_stats(&p[i], &p[j])));
            }
        }
        if let (Some(a), Some(b)) = (col("W6 Sync"), col("W6 bare")) {
            pairs.push((
                "W6 behind the layer, Sync ÷ bare handler".to_owned(),
                ratio_stats(&p[a], &p[b]),
            ));
        }
        let names: Vec<&str> = cells.iter().map(|(n, _)| *n).collect();
        let _ = writeln!(
            out,
            "\nPaired ratios, all at 64 callers or connections: {rounds} rounds, each running {} back to back, {secs} s each\n",
            names.join(", ")
        );
        let _ = writeln!(out, "| ratio | median | lowest | highest |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        for (name, (med, lo, hi)) in &pairs {
            let _ = writeln!(out, "| {name} | {med:.2} | {lo:.2} | {hi:.2} |");
        }
    }
    let paired_ratio = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|p| p.1.0);

    // Targets.
    let at64 = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.starts_with(name))
            .map_or(f64::NAN, |(_, c)| c[2])
    };
    let _ = writeln!(out, "\nTargets (performance issue)\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "| --- | --- | --- |");
    let mut target = |what: &str, v: f64, ok: bool, fmt: String| {
        let _ = writeln!(
            out,
            "| {what} | {fmt} | {} |",
            if v.is_nan() {
                "n/a"
            } else if ok {
                "yes"
            } else {
                "no"
            }
        );
    };
    // W1 twice: callers as OS threads, and as async tasks.
    let ours_async = at64("idemstore Sync, async");
    for (how, v) in [("threads", ours[2]), ("async tasks", ours_async)] {
        for (peer, paired_peer, times) in [
            ("raw limit", "raw limit", 0.5),
            ("sled 0.34, one flush", "sled, one flush", 30.0),
            ("sled 0.34, flush per step", "sled, flush per step", 30.0),
            ("redb (", "redb", 20.0),
            (
                "Redis 7, appendfsync always",
                "Redis 7 always (SET NX PX)",
                2.0,
            ),
        ] {
            // The paired median when measured, else the W1 table's cells.
            let r = paired_ratio(&format!("W1 Sync @64 {how} ÷ {paired_peer}"))
                .unwrap_or_else(|| v / at64(peer));
            target(
                &format!("W1 Sync @64 {how} ≥ {times} × {paired_peer}"),
                r,
                r >= times,
                format!("{r:.2}×"),
            );
        }
    }
    let (p50, p99) = w2.first().map_or((f64::NAN, f64::NAN), |r| (r.1, r.2));
    target("W2 p50 ≤ 2 µs", p50, p50 <= 2.0, format!("{p50:.2} µs"));
    target("W2 p99 ≤ 20 µs", p99, p99 <= 20.0, format!("{p99:.2} µs"));
    let r = w2.get(1).map_or(f64::NAN, |g| g.1 / p50);
    target(
        "W2 ≥ 10 × Redis GET (p50)",
        r,
        r >= 10.0,
        format!("{r:.1}×"),
    );
    if let Some(f) = &f {
        let k = get(f, "keys");
        let t = get(f, "open_hints");
        target(
            &format!("W4 open ({k:.0} keys; target is 10M in ≤ 3 s)"),
            t,
            t * 1e7 / k <= 3.0,
            format!("{t:.2} s"),
        );
        let h = get(f, "heap");
        target("W5 index ≤ 48 B/key", h, h <= 48.0, format!("{h:.1} B/key"));
        let d = (get(f, "segments") + get(f, "hints")) / get(f, "records");
        target(
            "W5 disk ≤ 1.15 × record bytes",
            d,
            d <= 1.15,
            format!("{d:.3}×"),
        );
    }
    let r = match paired_ratio("W6 behind the layer, Sync ÷ bare handler") {
        Some(m) => m,
        None if w6.len() > 1 => w6[1].1 / w6[0].1,
        None => f64::NAN,
    };
    target(
        "W6 layer (Sync) ≥ 0.5 × bare @64",
        r,
        r >= 0.5,
        format!("{r:.2}×"),
    );
}
