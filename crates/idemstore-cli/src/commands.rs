//! One function per command. Each prints its answer on stdout (text, or
//! JSON with `--json`) and says whether the answer is yes or no; what went
//! wrong is an `Err` with the message to print.

use crate::cli::{Cli, Command, KeyArgs, KeyRead, KeyWrite, Read, Write};
use crate::open::{check_store_dir, config, explain, open};
use crate::progress;
use crate::render;
use idemstore::{Key, KeyState, LiveRecord, Store, TenantDigest, Timestamp};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write as _;

/// A command's answer, for the exit status.
pub(crate) enum Outcome {
    /// Done; exit 0.
    Yes,
    /// The answer is no (damage found, no such key, nothing to do); exit 1.
    No,
}

/// Runs the command `cli` names.
pub(crate) fn run(cli: Cli) -> Result<Outcome, String> {
    match cli.command {
        Command::Stats(r) => stats(&r),
        Command::Verify(r) => verify(&r),
        Command::InFlight(r) => in_flight(&r),
        Command::Get(k) => get(&k),
        Command::Release(k) => release(&k),
        Command::Purge(k) => purge(&k),
        Command::Export(r) => export(&r),
        Command::Compact(w) => compact(&w),
    }
}

fn open_read(r: &Read) -> Result<Store, String> {
    open(&r.dir, r.read_only)
}

fn open_write(w: &Write, what: &str) -> Result<Store, String> {
    if w.read_only {
        return Err(format!(
            "{what} changes the store, which --read-only cannot; stop the service that has \
             {} open, then run it without --read-only",
            w.dir.display()
        ));
    }
    open(&w.dir, false)
}

/// Closes a store a command opened, so that what it wrote is durable and
/// the lock released before idemctl says it is done.
fn close(store: &Store) -> Result<(), String> {
    store.close().map_err(|e| explain(&e, store.is_read_only()))
}

fn print_json(v: &serde_json::Value) {
    println!("{v:#}");
}

/// The tenant digest `k` names, one way or the other.
fn digest(k: &KeyArgs) -> Result<TenantDigest, String> {
    match (&k.tenant, &k.tenant_digest) {
        (Some(t), _) => Ok(TenantDigest::of(t.as_bytes())),
        (None, Some(hex)) => TenantDigest::from_hex(hex).ok_or_else(|| {
            format!("--tenant-digest {hex:?} is not 64 hex digits (as `in-flight` prints it)")
        }),
        (None, None) => Err("pass --tenant (or --tenant-digest)".into()),
    }
}

fn stats(r: &Read) -> Result<Outcome, String> {
    let store = open_read(r)?;
    let now = store.now();
    let figures = store.stats();
    let segments = store.segments();
    let bar = progress::records("reading records", figures.live_keys);
    let (mut completed, mut pending, mut unreadable) = (0u64, 0u64, 0u64);
    let mut oldest: Option<(Timestamp, Vec<u8>)> = None;
    let mut newest: Option<(Timestamp, Vec<u8>)> = None;
    for rec in store.records() {
        bar.inc(1);
        match rec {
            Ok(LiveRecord {
                state: KeyState::Completed(s),
                key,
                ..
            }) => {
                completed += 1;
                let t = s.completed_at;
                if oldest.as_ref().is_none_or(|(o, _)| t < *o) {
                    oldest = Some((t, key.clone()));
                }
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, key));
                }
            }
            Ok(_) => pending += 1,
            Err(_) => unreadable += 1,
        }
    }
    bar.finish_and_clear();
    // Buckets: (start, end) -> (segments, bytes).
    let mut buckets: BTreeMap<(Timestamp, Timestamp), (u64, u64)> = BTreeMap::new();
    for s in &segments {
        let b = buckets.entry((s.bucket_start, s.bucket_end)).or_default();
        b.0 += 1;
        b.1 += s.bytes;
    }
    let disk: u64 = segments.iter().map(|s| s.bytes).sum();
    let report = store.recovery_report().clone();
    let previous = store.previous_open().cloned();
    close(&store)?;
    if r.json {
        let when = |o: &Option<(Timestamp, Vec<u8>)>| {
            o.as_ref()
                .map(|(t, k)| json!({"completed_at": render::time(*t), "key": render::text(k)}))
        };
        print_json(&json!({
            "dir": r.dir.display().to_string(),
            "read_only": r.read_only,
            "now": render::time(now),
            "live_keys": completed + pending,
            "completed": completed,
            "pending": pending,
            "unreadable_records": unreadable,
            "disk_bytes": disk,
            "segments": segments.len(),
            "buckets": buckets.iter().map(|((s, e), (n, b))| json!({
                "start": render::time(*s), "end": render::time(*e), "segments": n, "bytes": b,
            })).collect::<Vec<_>>(),
            "oldest_completion": when(&oldest),
            "newest_completion": when(&newest),
            "recovery": render::recovery_json(&report, report.abandoned.len()),
            "previous_open": previous.as_ref().map(|p| {
                let mut v = render::recovery_json(&p.report, usize::try_from(p.abandoned).unwrap_or(usize::MAX));
                v["at"] = render::time(p.at).into();
                v["pid"] = p.pid.into();
                v
            }),
        }));
    } else {
        let mode = if r.read_only {
            " (read-only: what the files held just now; nothing repaired)"
        } else {
            ""
        };
        println!("store      {}{mode}", r.dir.display());
        println!(
            "keys       {} live: {completed} completed, {pending} pending",
            completed + pending
        );
        if unreadable > 0 {
            println!("damaged    {unreadable} records could not be read: run `idemctl verify`");
        }
        println!(
            "disk       {disk} bytes in {} segments, {} buckets",
            segments.len(),
            buckets.len()
        );
        for ((s, e), (n, b)) in &buckets {
            println!(
                "bucket     [{}, {})  {n} segments, {b} bytes",
                render::time(*s),
                render::time(*e)
            );
        }
        for (label, o) in [("oldest", &oldest), ("newest", &newest)] {
            if let Some((t, k)) = o {
                println!(
                    "{label}     completed {} (key {})",
                    render::time(*t),
                    render::text(k)
                );
            }
        }
        if let Some(p) = &previous {
            println!(
                "the last open before this one (pid {}, {}) found:",
                p.pid,
                render::time(p.at)
            );
            let n = usize::try_from(p.abandoned).unwrap_or(usize::MAX);
            print!("{}", render::recovery_text(&p.report, n));
        }
        let verb = if r.read_only {
            "reading now (read-only)"
        } else {
            "this open"
        };
        println!("{verb} found:");
        print!("{}", render::recovery_text(&report, report.abandoned.len()));
    }
    Ok(if unreadable == 0 {
        Outcome::Yes
    } else {
        Outcome::No
    })
}

fn verify(r: &Read) -> Result<Outcome, String> {
    check_store_dir(&r.dir)?;
    let bar = progress::bytes("verifying");
    let report = idemstore::verify(&r.dir, &config(), &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if r.json {
        print_json(&render::verify_json(&report));
    } else {
        for p in &report.problems {
            println!("damage: {p}");
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        let verdict = if report.is_clean() {
            "clean".to_owned()
        } else {
            format!(
                "{} problems: restore the files named from a backup, or move them away (their records are lost)",
                report.problems.len()
            )
        };
        println!(
            "{} segments, {} records, {} bytes, {} hint files checked: {verdict}",
            report.segments, report.records, report.bytes, report.hints_checked
        );
    }
    Ok(if report.is_clean() {
        Outcome::Yes
    } else {
        Outcome::No
    })
}

fn in_flight(r: &Read) -> Result<Outcome, String> {
    let store = open_read(r)?;
    let now = store.now();
    let listed = store.recovery_report().abandoned.clone();
    close(&store)?;
    if r.json {
        print_json(&json!(
            listed
                .iter()
                .map(|a| render::abandoned_json(a, now))
                .collect::<Vec<_>>()
        ));
    } else {
        println!(
            "{:<64}  {:<24}  {:<32}  {:>10}  KEY",
            "TENANT DIGEST", "STARTED", "LEASE END", "TOKEN"
        );
        for a in &listed {
            let lease = if a.lease_end > now { "" } else { " (ended)" };
            println!(
                "{}  {:<24}  {:<32}  {:>10}  {}",
                a.tenant.to_hex(),
                render::time(a.started_at),
                format!("{}{lease}", render::time(a.lease_end)),
                a.token,
                render::text(&a.key)
            );
        }
        if r.read_only {
            eprintln!(
                "{} reservations not finished when the files were read: those with a running lease \
                 may be running in the service now; the others' handlers may have run with no \
                 response stored",
                listed.len()
            );
        } else {
            eprintln!(
                "{} reservations no holder finished: their handlers may have run with no response stored",
                listed.len()
            );
        }
    }
    Ok(Outcome::Yes)
}

fn get(k: &KeyRead) -> Result<Outcome, String> {
    let tenant = digest(&k.key)?;
    let store = open_read(&k.read)?;
    let found = store
        .record(tenant, Key::new(&k.key.key))
        .map_err(|e| e.to_string())?;
    close(&store)?;
    let outcome = if found.is_some() {
        Outcome::Yes
    } else {
        Outcome::No
    };
    match (found, k.read.json) {
        (Some(rec), true) => print_json(&render::record_json(&rec)),
        (Some(rec), false) => print!("{}", render::record_text(&rec)),
        (None, true) => print_json(&json!(null)),
        (None, false) => println!(
            "no record for this key: never seen, expired, purged, or a reservation released or taken over"
        ),
    }
    Ok(outcome)
}

fn release(k: &KeyWrite) -> Result<Outcome, String> {
    change_key(
        k,
        "release",
        Store::release,
        (
            "released",
            "released: a retry with this key runs the request again",
        ),
        "nothing to release: the key has no reservation (free, or completed: see `idemctl get`)",
    )
}

fn purge(k: &KeyWrite) -> Result<Outcome, String> {
    change_key(
        k,
        "purge",
        Store::purge,
        (
            "purged",
            "purged: the next request with this key runs again",
        ),
        "nothing to purge: the key has no completed record (see `idemctl get`)",
    )
}

/// Runs `op` (release or purge, named `what`) on the key `k` names, then
/// says `done` (its JSON field and text) or `none`.
fn change_key(
    k: &KeyWrite,
    what: &str,
    op: fn(&Store, TenantDigest, Key<'_>) -> idemstore::Result<bool>,
    done: (&str, &str),
    none: &str,
) -> Result<Outcome, String> {
    let tenant = digest(&k.key)?;
    let store = open_write(&k.write, what)?;
    let changed = op(&store, tenant, Key::new(&k.key.key)).map_err(|e| e.to_string())?;
    close(&store)?;
    if k.write.json {
        print_json(&json!({ done.0: changed }));
    } else {
        println!("{}", if changed { done.1 } else { none });
    }
    Ok(if changed { Outcome::Yes } else { Outcome::No })
}

fn export(r: &Read) -> Result<Outcome, String> {
    let store = open_read(r)?;
    let bar = progress::records("exporting", store.stats().live_keys);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut written, mut damaged) = (0u64, Vec::new());
    for rec in store.records() {
        bar.inc(1);
        match rec {
            Ok(rec) => {
                writeln!(out, "{}", render::record_json(&rec))
                    .map_err(|e| format!("writing to stdout: {e}"))?;
                written += 1;
            }
            Err(e) => damaged.push(e.to_string()),
        }
    }
    out.flush().map_err(|e| format!("writing to stdout: {e}"))?;
    bar.finish_and_clear();
    close(&store)?;
    eprintln!("{written} records exported");
    if damaged.is_empty() {
        return Ok(Outcome::Yes);
    }
    for d in &damaged {
        eprintln!("not exported: {d}");
    }
    eprintln!(
        "{} records could not be read: run `idemctl verify`",
        damaged.len()
    );
    Ok(Outcome::No)
}

fn compact(w: &Write) -> Result<Outcome, String> {
    let store = open_write(w, "compact")?;
    let spin = progress::spinner("compacting");
    let report = store.compact_now().map_err(|e| e.to_string());
    spin.finish_and_clear();
    let report = report?;
    close(&store)?;
    if w.json {
        print_json(&json!({
            "segments_dropped": report.segments_dropped,
            "bytes_freed": report.bytes_freed,
            "index_entries_dropped": report.index_entries_dropped,
            "orphans_dropped": report.orphans_dropped,
        }));
    } else {
        println!(
            "deleted {} segment files ({} bytes) whose bucket ended; forgot {} expired keys and {} reservations whose lease ended",
            report.segments_dropped,
            report.bytes_freed,
            report.index_entries_dropped,
            report.orphans_dropped
        );
    }
    Ok(Outcome::Yes)
}
