//! redb: one write transaction per step (reserve; complete with a row in an
//! expiry table, redb having no TTL), each committed with its default
//! immediate durability; and a batched variant, where one committer thread
//! applies every queued step in one transaction (group commit by hand).

use super::{BODY, threads};
use ::redb::ReadableTable;
use std::sync::Arc;

const TABLE: ::redb::TableDefinition<&str, &[u8]> = ::redb::TableDefinition::new("idem");
/// TTL emulation: (expires_at ms, key) → (), swept by a range delete.
const EXPIRY: ::redb::TableDefinition<(u64, &str), ()> = ::redb::TableDefinition::new("expiry");

fn expires_at() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    u64::try_from(now).unwrap_or(u64::MAX) + 24 * 3600 * 1000
}

/// One redb step: reserve (`value` None: the key must be absent) or
/// complete, with its expiry row, in the transaction `txn`.
fn redb_step(txn: &::redb::WriteTransaction, key: &str, value: Option<&[u8]>) {
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
pub fn run(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = Arc::new(::redb::Database::create(dir.path().join("db")).expect("redb"));
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
pub fn run_batched(callers: usize, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let db = ::redb::Database::create(dir.path().join("db")).expect("redb");
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
