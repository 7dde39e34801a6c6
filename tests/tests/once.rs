//! "Runs once" under the faults a live server meets, as a real process over
//! real TCP, on the embedded store and on Redis: clients that time out at
//! several moments of the handler, a handler that panics after its side
//! effect, a streamed response whose client goes away, a full disk (a real
//! tmpfs, as root), and Redis paused with SIGSTOP while a handler completes.
//!
//! The service is the `once_probe` binary of this crate: its handler appends the key to an
//! effects file *before* it awaits, so every execution is counted.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use idemstore_tests::{RedisServer as Redis, Reply, Tmpfs, listening_addr, send};

fn probe_binary() -> PathBuf {
    // Built by cargo with this test: a binary of this crate.
    PathBuf::from(env!("CARGO_BIN_EXE_once_probe"))
}

/// The probe service as a child process.
struct Probe {
    child: Child,
    addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
    effects: PathBuf,
    _dir: tempfile::TempDir,
}

impl Probe {
    fn start(backend: &[&str]) -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let effects = dir.path().join("effects");
        let mut child = Command::new(probe_binary())
            .args(["--listen", "127.0.0.1:0", "--effects"])
            .arg(&effects)
            .args(backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (addr, stdout) = listening_addr(&mut child);
        Probe {
            child,
            addr,
            _stdout: stdout,
            effects,
            _dir: dir,
        }
    }

    fn embedded(data: &Path) -> Probe {
        Probe::start(&["--data", data.to_str().unwrap()])
    }

    fn redis(url: &str, timeout_ms: u64) -> Probe {
        Probe::start(&[
            "--redis",
            url,
            "--redis-timeout-ms",
            &timeout_ms.to_string(),
        ])
    }

    /// How many times each key's side effect happened.
    fn effects(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for line in std::fs::read_to_string(&self.effects)
            .unwrap_or_default()
            .lines()
        {
            *counts.entry(line.to_owned()).or_default() += 1;
        }
        counts
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(addr: SocketAddr, tenant: &str, key: &str, query: &str) -> Request<Full<Bytes>> {
    Request::post(format!("/charge?{query}"))
        .header("host", addr.to_string())
        .header("x-api-key", tenant)
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(b"{\"amount\":100}")))
        .unwrap()
}

/// One request on a fresh connection; a server that does not answer within
/// 20 s fails the test rather than hanging it.
async fn post(addr: SocketAddr, key: &str, query: &str) -> Reply {
    tokio::time::timeout(
        Duration::from_secs(20),
        send(addr, request(addr, "alice", key, query)),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer for {key} within 20 s"))
}

/// Sends the request, then closes the connection after `after`, whatever
/// was received: a client whose timeout fired.
async fn post_and_give_up(addr: SocketAddr, key: &str, query: &str, after: Duration) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let send = sender.send_request(request(addr, "alice", key, query));
    let _ = tokio::time::timeout(after, async {
        let resp = send.await?;
        // Reading the body slowly: give up in the middle of it too.
        resp.into_body().collect().await.map(|_| ())
    })
    .await;
    conn.abort();
}

/// Retries `key` until it is no longer in flight; returns the answer and
/// how many 409s came first.
async fn retry_until_done(addr: SocketAddr, key: &str, query: &str) -> (Reply, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conflicts = 0;
    loop {
        let r = post(addr, key, query).await;
        let busy = r.status == StatusCode::CONFLICT
            || r.problem().ends_with("response-not-stored")
            || r.problem().ends_with("store-unavailable");
        if !busy {
            return (r, conflicts);
        }
        conflicts += usize::from(r.status == StatusCode::CONFLICT);
        assert!(
            Instant::now() < deadline,
            "{key} stayed busy: {}",
            r.problem()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients that give up before the handler is done, mid-handler, just before
/// it ends, and while reading the response; each then retries. Every key's
/// effect happens once and every retry ends with the first response.
async fn timeouts_at_every_moment_run_each_key_once(p: &Probe) {
    let moments = [5, 100, 250, 390, 600];
    let mut tasks = Vec::new();
    for (i, ms) in moments.into_iter().enumerate() {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let key = format!("timeout-{i}");
            post_and_give_up(addr, &key, "delay_ms=400", Duration::from_millis(ms)).await;
            retry_until_done(addr, &key, "delay_ms=400").await
        }));
    }
    let mut conflicts = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (r, c) = t.await.unwrap();
        conflicts += c;
        assert_eq!(r.status, StatusCode::CREATED, "timeout-{i}");
        // A client that gives up within 5 ms may close before its request
        // left: then its retry is the first run. Later ones surely arrived.
        assert!(
            r.replayed() || i == 0,
            "timeout-{i}: the first run was stored"
        );
        assert_eq!(r.body, format!("charged timeout-{i}"));
    }
    assert!(conflicts > 0, "some retries came while the first still ran");
    let effects = p.effects();
    for i in 0..moments.len() {
        assert_eq!(effects[&format!("timeout-{i}")], 1, "timeout-{i} ran twice");
    }
}

/// A handler that panics after its side effect: a 500, stored (the default
/// policy stores every response), replayed, never run again.
async fn a_panic_after_the_side_effect_runs_once(p: &Probe) {
    let r = post(p.addr, "panic-1", "panic=1").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.problem().ends_with("handler-failed"), "{}", r.problem());
    for _ in 0..5 {
        let r = post(p.addr, "panic-1", "panic=1").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.replayed());
    }
    assert_eq!(p.effects()["panic-1"], 1);
}

/// A streamed body reaches the client as it comes; a client that goes away
/// mid-stream leaves it to be read and stored.
async fn a_streamed_response_is_stored_when_its_client_left(p: &Probe) {
    post_and_give_up(p.addr, "stream-1", "stream=1", Duration::from_millis(30)).await;
    let (r, _) = retry_until_done(p.addr, "stream-1", "stream=1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.replayed());
    assert_eq!(r.body, "charged stream-1");
    assert_eq!(p.effects()["stream-1"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_runs_each_key_once_under_client_timeouts_panics_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let p = Probe::embedded(&dir.path().join("store"));
    timeouts_at_every_moment_run_each_key_once(&p).await;
    a_panic_after_the_side_effect_runs_once(&p).await;
    a_streamed_response_is_stored_when_its_client_left(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_runs_each_key_once_under_client_timeouts_panics_and_streams() {
    let redis = Redis::start();
    let p = Probe::redis(&redis.url(), 2000);
    timeouts_at_every_moment_run_each_key_once(&p).await;
    a_panic_after_the_side_effect_runs_once(&p).await;
    a_streamed_response_is_stored_when_its_client_left(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_while_a_handler_completes_keeps_the_key_and_stores_it_later() {
    let redis = Redis::start();
    let p = Probe::redis(&redis.url(), 300);
    let addr = p.addr;
    let first = tokio::spawn(async move { post(addr, "paused-1", "delay_ms=500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.signal("-STOP");
    // The handler finishes while Redis is paused: its completion times out.
    let r = first.await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.problem().ends_with("response-not-stored"),
        "{}",
        r.problem()
    );
    assert!(r.headers.contains_key("retry-after"));
    // While Redis is paused nothing can be decided: 503, no handler.
    let r = post(addr, "paused-1", "delay_ms=500").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.problem().ends_with("store-unavailable"),
        "{}",
        r.problem()
    );
    redis.signal("-CONT");
    let (r, _) = retry_until_done(addr, "paused-1", "delay_ms=500").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.replayed(), "the kept completion reached Redis");
    assert_eq!(r.body, "charged paused-1");
    assert_eq!(p.effects()["paused-1"], 1, "never run twice");
}

/// Responses big enough that a small disk fills within a few hundred.
const PAD: &str = "pad=8000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_a_real_server_never_runs_a_key_twice_and_recovers() {
    let fs = match Tmpfs::mount("2m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_under_a_real_server: cannot mount a tmpfs ({why}); run as root"
            );
            return;
        }
    };
    let p = Probe::embedded(&fs.path().join("store"));
    let mut acked = Vec::new();
    for i in 0..10 {
        let key = format!("before-{i}");
        let r = post(p.addr, &key, PAD).await;
        assert_eq!(r.status, StatusCode::CREATED);
        acked.push((key, r.body));
    }
    let filler = fs.fill();
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let key = format!("during-{i}");
        let r = post(p.addr, &key, PAD).await;
        match (r.status, r.problem().rsplit(':').next().unwrap_or("")) {
            (StatusCode::CREATED, _) => acked.push((key, r.body)),
            (StatusCode::SERVICE_UNAVAILABLE, "response-not-stored") => kept.push(key),
            (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable") => {
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            (s, t) => panic!("{key}: unexpected {s} {t}"),
        }
    }
    assert_eq!(refused, 5, "the full disk was noticed");
    assert!(
        !kept.is_empty(),
        "some handler ran as the disk filled: its response was kept"
    );
    // Replays need no write: served while the disk is full.
    for (key, body) in &acked {
        let r = post(p.addr, key, PAD).await;
        assert!(r.replayed(), "{key} while full: {}", r.status);
        assert_eq!(&r.body, body);
    }
    std::fs::remove_file(&filler).unwrap();
    // Without a restart: the kept responses are written, new keys work.
    for key in &kept {
        let (r, _) = retry_until_done(p.addr, key, PAD).await;
        assert_eq!(r.status, StatusCode::CREATED, "{key}");
        assert!(r.replayed(), "{key}");
        acked.push((key.clone(), r.body));
    }
    let (r, _) = retry_until_done(p.addr, "after-1", PAD).await;
    assert_eq!(r.status, StatusCode::CREATED);
    for (key, body) in &acked {
        let r = post(p.addr, key, PAD).await;
        assert!(r.replayed(), "{key} after the space returned");
        assert_eq!(&r.body, body);
    }
    let effects = p.effects();
    for (key, n) in &effects {
        assert_eq!(*n, 1, "{key} ran {n} times");
    }
    for (key, _) in &acked {
        assert_eq!(effects.get(key), Some(&1), "{key}");
    }
}
