//! `idemctl` on real stores of the `payments` example: killed with
//! requests in flight (then `in-flight` lists exactly those, and `release`
//! frees one, and `stats` shows what the restarted service's open found),
//! a flipped byte (`verify` names it), `purge` (then a retry
//! runs again), and `--read-only` beside the running service (which goes on
//! as if nothing had looked).

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use idemstore::TenantDigest;
use idemstore_tests::{Payments, Reply, idemctl_binary, send};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const API_KEY: &str = "key_live_ops";

async fn pay(addr: SocketAddr, key: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/payments")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-api-key", API_KEY)
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(addr, req).await
}

/// Runs `idemctl ARGS`; its output.
fn idemctl(args: &[&str]) -> Output {
    Command::new(idemctl_binary()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `idemctl ARGS --json`, which must exit with `code`; its JSON.
fn idemctl_json(args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = idemctl(&all);
    assert_eq!(
        o.status.code(),
        Some(code),
        "idemctl {all:?}: {}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn dir_str(d: &Path) -> &str {
    d.to_str().unwrap()
}

/// The keys of an `in-flight --json` list, sorted.
fn listed_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn after_a_kill_9_in_flight_lists_exactly_the_requests_that_were_running() {
    let data = tempfile::tempdir().unwrap();
    let dir = dir_str(data.path());
    let server = Payments::start(data.path());
    let addr = server.addr;
    for i in 0..3 {
        let r = pay(
            addr,
            &format!("done-{i}"),
            r#"{"amount":1,"currency":"EUR"}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let slow: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    let slow_body = r#"{"amount":2,"currency":"EUR","delay_ms":60000}"#;
    // Sent by hand and never read: the kill cuts these connections.
    let mut conns = Vec::new();
    for k in &slow {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /v1/payments HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             x-api-key: {API_KEY}\r\nidempotency-key: {k}\r\ncontent-length: {}\r\n\r\n{slow_body}",
            slow_body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        conns.push(c);
    }
    // Read beside the running service until its reservations are on disk.
    let start = Instant::now();
    loop {
        let v = idemctl_json(&["in-flight", dir, "--read-only"], 0);
        if listed_keys(&v) == slow {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "running requests not listed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server); // kill -9, four handlers mid-flight
    drop(conns);

    let v = idemctl_json(&["in-flight", dir], 0);
    assert_eq!(listed_keys(&v), slow, "exactly the running ones: {v}");
    let digest = TenantDigest::of(API_KEY.as_bytes()).to_hex();
    for a in v.as_array().unwrap() {
        assert_eq!(a["tenant_digest"], digest.as_str());
        assert_eq!(a["lease_running"], true);
        assert!(a["token"].as_u64().unwrap() > 0);
    }
    // A completed key, read back whole.
    let got = idemctl_json(&["get", dir, "--tenant", API_KEY, "--key", "done-1"], 0);
    assert_eq!(got["state"], "completed");
    assert_eq!(got["status"], 201);
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["amount"], 1);

    // Release one by the digest the list gives; the others stay reserved.
    let o = idemctl(&[
        "release",
        dir,
        "--tenant-digest",
        &digest,
        "--key",
        "slow-0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = idemctl(&["release", dir, "--tenant", API_KEY, "--key", "done-0"]);
    assert_eq!(o.status.code(), Some(1), "a completion is not released");
    let v = idemctl_json(&["in-flight", dir], 0);
    assert_eq!(listed_keys(&v), &slow[1..]);

    let server = Payments::start(data.path());
    let freed = pay(server.addr, "slow-0", r#"{"amount":3,"currency":"EUR"}"#).await;
    assert_eq!(freed.status, StatusCode::CREATED, "released: runs at once");
    assert!(!freed.replayed());
    let held = pay(server.addr, "slow-1", slow_body).await;
    assert_eq!(
        held.status,
        StatusCode::CONFLICT,
        "not released: in flight until its lease ends"
    );
    let pid = server.child.id();
    server.stop();
    // What the service's open found stays on record for the next look.
    let stats = idemctl_json(&["stats", dir], 0);
    let last = &stats["previous_open"];
    assert_eq!(last["pid"].as_u64(), Some(u64::from(pid)), "{stats}");
    assert_eq!(
        (last["abandoned"].as_u64(), last["pending_live"].as_u64()),
        (Some(3), Some(3)),
        "{stats}"
    );
}

#[tokio::test]
async fn verify_names_the_segment_and_offset_of_a_flipped_byte() {
    let data = tempfile::tempdir().unwrap();
    let dir = dir_str(data.path());
    let server = Payments::start(data.path());
    for i in 0..20 {
        let r = pay(
            server.addr,
            &format!("k-{i}"),
            r#"{"amount":7,"currency":"USD"}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    server.stop();
    let clean = idemctl(&["verify", dir]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("clean"), "{}", stdout(&clean));

    let seg = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.ends_with(".seg"))
        .unwrap();
    let path = data.path().join(&seg);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let o = idemctl(&["verify", dir]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("damage: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no damage line: {}", stdout(&o)));
    assert!(line.contains(&seg) && line.contains("at offset "), "{line}");
    let v = idemctl_json(&["verify", dir], 1);
    assert_eq!(v["clean"], false);
    let p = &v["problems"][0];
    assert_eq!(p["file"], seg.as_str());
    let off = p["offset"].as_u64().unwrap();
    assert!(
        off <= at as u64 && at as u64 - off < 4096,
        "{p} for a flip at {at}"
    );
}

#[tokio::test]
async fn purge_makes_a_retry_run_again() {
    let data = tempfile::tempdir().unwrap();
    let dir = dir_str(data.path());
    let body = r#"{"amount":50,"currency":"EUR"}"#;
    let server = Payments::start(data.path());
    let first = pay(server.addr, "order-9", body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = pay(server.addr, "order-9", body).await;
    assert!(again.replayed());
    assert_eq!(again.json()["id"], first.json()["id"]);
    server.stop();

    let o = idemctl(&["purge", dir, "--tenant", API_KEY, "--key", "order-9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = idemctl(&["purge", dir, "--tenant", API_KEY, "--key", "order-9"]);
    assert_eq!(o.status.code(), Some(1), "purged already: {}", stdout(&o));
    assert_eq!(
        idemctl(&["get", dir, "--tenant", API_KEY, "--key", "order-9"])
            .status
            .code(),
        Some(1)
    );

    let server = Payments::start(data.path());
    let rerun = pay(server.addr, "order-9", body).await;
    assert_eq!(rerun.status, StatusCode::CREATED);
    assert!(!rerun.replayed(), "runs again after the purge");
    assert_ne!(rerun.json()["id"], first.json()["id"]);
    server.stop();
}

#[tokio::test]
async fn read_only_reads_beside_the_running_service_which_goes_on_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let dir = dir_str(data.path());
    let server = Payments::start(data.path());
    let body = r#"{"amount":4,"currency":"GBP"}"#;
    for i in 0..5 {
        assert_eq!(
            pay(server.addr, &format!("r-{i}"), body).await.status,
            StatusCode::CREATED
        );
    }
    // Without --read-only: the lock is taken, and idemctl says what to do.
    let o = idemctl(&["stats", dir]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("--read-only") && e.contains("pid"),
        "says why and what to do: {e}"
    );
    // Writes cannot be read-only.
    let o = idemctl(&[
        "purge",
        dir,
        "--read-only",
        "--tenant",
        API_KEY,
        "--key",
        "r-0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stop the service"), "{}", stderr(&o));

    let stats = idemctl_json(&["stats", dir, "--read-only"], 0);
    assert_eq!(
        (stats["completed"].as_u64(), stats["pending"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(stats["read_only"], true);
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["buckets"].as_array().unwrap().len(), 1);

    let o = idemctl(&["export", dir, "--read-only"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut keys: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], "completed");
            v["key"].as_str().unwrap().to_owned()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["r-0", "r-1", "r-2", "r-3", "r-4"]);
    let got = idemctl_json(
        &[
            "get",
            dir,
            "--read-only",
            "--tenant",
            API_KEY,
            "--key",
            "r-3",
        ],
        0,
    );
    assert_eq!(got["status"], 201);
    assert!(
        idemctl(&["verify", dir]).status.success(),
        "verify needs no lock either"
    );

    // The service went on as if nothing had looked.
    let r = pay(server.addr, "r-5", body).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(pay(server.addr, "r-5", body).await.replayed());
    assert!(pay(server.addr, "r-0", body).await.replayed());
    server.stop();

    let o = idemctl(&["compact", dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stats = idemctl_json(&["stats", dir], 0);
    assert_eq!(
        stats["completed"].as_u64(),
        Some(6),
        "nothing live compacted"
    );
}

#[test]
fn a_directory_without_a_store_is_refused_and_left_as_it_was() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["stats"][..],
        &["get", "--tenant", "t", "--key", "k"],
        &["purge", "--tenant", "t", "--key", "k"],
        &["verify"],
        &["in-flight", "--read-only"],
    ] {
        let mut all = vec![args[0], dir_str(empty.path())];
        all.extend_from_slice(&args[1..]);
        let o = idemctl(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {}", stdout(&o));
        assert!(
            stderr(&o).contains("holds no idemstore files"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing created"
    );
}
