//! SQLite (rusqlite, bundled SQLite) as a competent user would build an
//! idempotency store on it: WAL, `synchronous = FULL` (each commit fsynced),
//! one connection per caller, a row per (tenant, key); reserve with `INSERT
//! OR IGNORE` (one changed row: reserved), complete with a fenced `UPDATE`.
//! Each statement is its own transaction, so each step is durable.

use super::{BODY, threads};
use std::path::Path;
use std::time::Duration;

/// Cycles/s of `callers` threads, each with its own connection to one
/// database in a fresh directory.
pub fn run(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let path = dir.path().join("idem.db");
    let setup = open(&path);
    setup
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS idem (
                 tenant BLOB NOT NULL, key BLOB NOT NULL, fingerprint BLOB NOT NULL,
                 token INTEGER NOT NULL, state INTEGER NOT NULL, response BLOB,
                 expires_at INTEGER NOT NULL, PRIMARY KEY (tenant, key)) WITHOUT ROWID;",
        )
        .expect("create table");
    let conns: Vec<std::sync::Mutex<rusqlite::Connection>> = (0..callers)
        .map(|_| std::sync::Mutex::new(open(&path)))
        .collect();
    let conns = std::sync::Arc::new(conns);
    let body = vec![0x5au8; BODY];
    let rate = threads(callers, secs, move |t, i| {
        let conn = conns[t].lock().expect("connection");
        let key = format!("k-{t}-{i}");
        let token = (t as i64) << 40 | i as i64;
        let reserved = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO idem (tenant, key, fingerprint, token, state, expires_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    b"tenant".as_slice(),
                    key.as_bytes(),
                    [7u8; 32].as_slice(),
                    token,
                    i64::MAX
                ])
            })
            .expect("reserve");
        assert_eq!(reserved, 1, "fresh keys are always reserved");
        let done = conn
            .prepare_cached(
                "UPDATE idem SET state = 1, response = ?1
                 WHERE tenant = ?2 AND key = ?3 AND token = ?4 AND state = 0",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    body.as_slice(),
                    b"tenant".as_slice(),
                    key.as_bytes(),
                    token
                ])
            })
            .expect("complete");
        assert_eq!(done, 1, "the holder completes");
    });
    drop(setup);
    rate
}

/// A connection in WAL mode with every commit fsynced, waiting for the
/// write lock rather than failing.
fn open(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open SQLite");
    c.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    c.pragma_update(None, "journal_mode", "WAL")
        .expect("journal_mode");
    c.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    c
}
