//! A real kill -9. The test binary re-runs itself as a child that completes
//! keys from several threads and prints `ACK <key>` after each `complete`
//! returns. The parent SIGKILLs it at a random moment, reopens the store and
//! checks that every acknowledged key replays byte for byte. Repeated, on the
//! same directory, so later children recover what earlier ones left.
//!
//! `IDEMSTORE_CRASH_KILLS=N` sets the number of kills (default 20).
//! A kill -9 leaves the OS page cache intact, so this proves the process-crash
//! promise of every mode; power loss is covered by the model test's crash
//! images (`tests/model.rs`).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use idemstore::{Begin, Config, Durability, Fingerprint, Response, Store};
use idemstore::{Key, Tenant};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "IDEMSTORE_CRASH_CHILD_DIR";

fn body_for(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    let mut r = h.finalize_xof();
    out.resize(300 + key.len() % 300, 0);
    r.fill(&mut out);
    out
}

fn fingerprint(key: &str) -> Fingerprint {
    Fingerprint::of(key.as_bytes())
}

fn child(dir: &str) -> ! {
    let store =
        Store::open(dir, Config::default().durability(Durability::Sync)).expect("child: open");
    let pid = std::process::id();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let stdout = std::io::stdout();
                for i in 0.. {
                    let key = format!("{pid}-{t}-{i}");
                    match store
                        .begin(Tenant::new("tenant"), Key::new(&key), fingerprint(&key))
                        .expect("begin")
                    {
                        Begin::Reserved(r) => {
                            let resp = Response::new(201, body_for(&key))
                                .with_header("x-key", key.as_bytes().to_vec());
                            r.complete(resp).expect("complete");
                        }
                        other => panic!("fresh key {key} not reserved: {other:?}"),
                    }
                    let mut out = stdout.lock();
                    writeln!(out, "ACK {key}").expect("stdout");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0);
}

#[test]
fn acknowledged_completions_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let kills: usize = std::env::var("IDEMSTORE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let mut torn = 0;
    for round in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_completions_survive_kill_9",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut keys = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ACK ") {
                    keys.push(k.to_owned());
                }
            }
            keys
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = 20 + seed % 280;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must die by the signal"
        );
        let new = reader.join().unwrap();
        acked.extend(new);

        let store = Store::open(dir.path(), Config::default()).unwrap();
        let rep = store.recovery_report().clone();
        torn += rep.torn_tails;
        assert_eq!(
            rep.corrupt_regions, 0,
            "round {round}: a kill -9 cannot corrupt the middle: {rep:?}"
        );
        assert!(rep.unreadable_segments.is_empty(), "{rep:?}");
        for key in &acked {
            match store
                .begin(Tenant::new("tenant"), Key::new(key), fingerprint(key))
                .unwrap()
            {
                Begin::Replay(s) => {
                    assert_eq!(s.response.status, 201);
                    assert_eq!(
                        s.response.body,
                        body_for(key),
                        "round {round}: body of {key}"
                    );
                    assert_eq!(
                        s.response.headers,
                        vec![("x-key".to_owned(), key.as_bytes().to_vec())]
                    );
                }
                other => panic!("round {round}: acknowledged key {key} lost: {other:?}"),
            }
        }
        store.close().unwrap();
    }
    eprintln!(
        "kill -9 x{kills}: {} acknowledged completions all replayed; {torn} torn tails truncated",
        acked.len()
    );
    assert!(
        acked.len() > kills,
        "the children should have acknowledged work"
    );
}
