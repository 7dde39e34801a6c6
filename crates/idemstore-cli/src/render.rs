//! Records, times and reports as text (for people) and JSON (for scripts).
//!
//! Bytes that are UTF-8 are printed as text; others as base64, under a
//! field whose name says so (`key_base64`, `body_base64`, `value_base64`).
//! Times are RFC 3339 in UTC with milliseconds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idemstore::{Abandoned, KeyState, LiveRecord, RecoveryReport, Timestamp, VerifyReport};
use serde_json::{Map, Value, json};
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// `t` as RFC 3339, UTC, milliseconds; past the year 9999 (only a damaged
/// or hand-made record says so), as milliseconds since the epoch.
pub(crate) fn time(t: Timestamp) -> String {
    if t.0 > LAST_RFC3339_MS {
        return format!("{} ms after the epoch", t.0);
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

/// Puts `bytes` into `obj` as `name` (UTF-8) or `name_base64`.
fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert(name.into(), s.into()),
        Err(_) => obj.insert(format!("{name}_base64"), STANDARD.encode(bytes).into()),
    };
}

/// `bytes` for a line of text: as they are when UTF-8, else `base64:…`.
pub(crate) fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(bytes)),
    }
}

/// One live record as a JSON object.
pub(crate) fn record_json(r: &LiveRecord) -> Value {
    let mut o = Map::new();
    o.insert("tenant_digest".into(), r.tenant.to_hex().into());
    put_bytes(&mut o, "key", &r.key);
    o.insert("token".into(), r.token.into());
    match &r.state {
        KeyState::Pending {
            fingerprint,
            started_at,
            lease_end,
            abandoned,
        } => {
            o.insert("state".into(), "pending".into());
            o.insert("fingerprint".into(), fingerprint.to_hex().into());
            o.insert("started_at".into(), time(*started_at).into());
            o.insert("lease_end".into(), time(*lease_end).into());
            o.insert("abandoned".into(), (*abandoned).into());
        }
        KeyState::Completed(s) => {
            o.insert("state".into(), "completed".into());
            o.insert("fingerprint".into(), s.fingerprint.to_hex().into());
            o.insert("started_at".into(), time(s.started_at).into());
            o.insert("completed_at".into(), time(s.completed_at).into());
            o.insert("expires_at".into(), time(s.expires_at).into());
            o.insert("status".into(), s.response.status.into());
            let headers: Vec<Value> = s
                .response
                .headers
                .iter()
                .map(|(n, v)| {
                    let mut h = Map::new();
                    h.insert("name".into(), n.clone().into());
                    put_bytes(&mut h, "value", v);
                    Value::Object(h)
                })
                .collect();
            o.insert("headers".into(), headers.into());
            put_bytes(&mut o, "body", &s.response.body);
        }
        KeyState::Expired(e) => {
            o.insert("state".into(), "expired".into());
            o.insert("expired_at".into(), time(e.expired_at).into());
            o.insert("refused_until".into(), time(e.refused_until).into());
        }
    }
    Value::Object(o)
}

/// One live record as lines of text.
pub(crate) fn record_text(r: &LiveRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tenant digest  {}", r.tenant.to_hex());
    let _ = writeln!(out, "key            {}", text(&r.key));
    match &r.state {
        KeyState::Pending {
            started_at,
            lease_end,
            abandoned,
            ..
        } => {
            let whose = if *abandoned {
                "its holder died with an earlier process"
            } else {
                "held by the process that has the store open"
            };
            let _ = writeln!(out, "state          pending, token {} ({whose})", r.token);
            let _ = writeln!(out, "started        {}", time(*started_at));
            let _ = writeln!(out, "lease ends     {}", time(*lease_end));
        }
        KeyState::Completed(s) => {
            let _ = writeln!(out, "state          completed, token {}", r.token);
            let _ = writeln!(out, "started        {}", time(s.started_at));
            let _ = writeln!(out, "completed      {}", time(s.completed_at));
            let _ = writeln!(out, "expires        {}", time(s.expires_at));
            let _ = writeln!(out, "status         {}", s.response.status);
            for (n, v) in &s.response.headers {
                let _ = writeln!(out, "header         {n}: {}", text(v));
            }
            match std::str::from_utf8(&s.response.body) {
                Ok(b) => {
                    let _ = writeln!(out, "body           {b}");
                }
                Err(_) => {
                    let _ = writeln!(out, "body (base64)  {}", STANDARD.encode(&s.response.body));
                }
            }
        }
        KeyState::Expired(e) => {
            let _ = writeln!(
                out,
                "state          expired, refused (purge frees it), token {}",
                r.token
            );
            let _ = writeln!(out, "expired        {}", time(e.expired_at));
            let _ = writeln!(out, "refused until  {}", time(e.refused_until));
        }
    }
    out
}

/// An abandoned reservation as a JSON object; `lease_running` at `now`.
pub(crate) fn abandoned_json(a: &Abandoned, now: Timestamp) -> Value {
    let mut o = Map::new();
    o.insert("tenant_digest".into(), a.tenant.to_hex().into());
    put_bytes(&mut o, "key", &a.key);
    o.insert("token".into(), a.token.into());
    o.insert("fingerprint".into(), a.fingerprint.to_hex().into());
    o.insert("started_at".into(), time(a.started_at).into());
    o.insert("lease_end".into(), time(a.lease_end).into());
    o.insert("lease_running".into(), (a.lease_end > now).into());
    Value::Object(o)
}

/// What opening found, as JSON; `abandoned` reservations (the report's
/// list, or the count an earlier open left).
pub(crate) fn recovery_json(r: &RecoveryReport, abandoned: usize) -> Value {
    json!({
        "read_only": r.read_only,
        "segments_read": r.segments_read,
        "segments_from_hints": r.segments_from_hints,
        "records_read": r.records_read,
        "completed_live": r.completed_live,
        "pending_live": r.pending_live,
        "abandoned": abandoned,
        "torn_tails": r.torn_tails,
        "bytes_truncated": r.bytes_truncated,
        "corrupt_regions": r.corrupt_regions,
        "corrupt_bytes": r.corrupt_bytes,
        "undecodable_records": r.undecodable_records,
        "hints_written": r.hints_written,
        "expired_segments_removed": r.expired_segments_removed,
        "empty_segments_removed": r.empty_segments_removed,
        "unreadable_segments": r.unreadable_segments.iter()
            .map(|(f, why)| json!({"file": f, "reason": why})).collect::<Vec<_>>(),
        "duration_ms": u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
    })
}

/// What opening found, as lines of text (see [`recovery_json`]).
pub(crate) fn recovery_text(r: &RecoveryReport, abandoned: usize) -> String {
    let (truncated, removed) = if r.read_only {
        ("torn tails (left as they are)", "left in place")
    } else {
        ("torn tails truncated", "removed")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  read {} segments ({} from their hints), {} records in {} ms",
        r.segments_read,
        r.segments_from_hints,
        r.records_read,
        r.duration.as_millis()
    );
    let _ = writeln!(
        out,
        "  {truncated}: {} ({} bytes); damaged regions skipped: {} ({} bytes); undecodable records: {}",
        r.torn_tails, r.bytes_truncated, r.corrupt_regions, r.corrupt_bytes, r.undecodable_records
    );
    let _ = writeln!(
        out,
        "  ended segments {removed}: {}; empty segments {removed}: {}; hints written: {}",
        r.expired_segments_removed, r.empty_segments_removed, r.hints_written
    );
    let _ = writeln!(
        out,
        "  abandoned reservations: {abandoned} ({} with a running lease; see `idemctl in-flight`)",
        r.pending_live
    );
    for (f, why) in &r.unreadable_segments {
        let _ = writeln!(out, "  unreadable, left in place: {f}: {why}");
    }
    out
}

/// A verify report as JSON.
pub(crate) fn verify_json(r: &VerifyReport) -> Value {
    let finding =
        |f: &idemstore::Finding| json!({"file": f.file, "offset": f.offset, "what": f.what});
    json!({
        "clean": r.is_clean(),
        "segments": r.segments,
        "records": r.records,
        "bytes": r.bytes,
        "hints_checked": r.hints_checked,
        "floor": r.floor,
        "problems": r.problems.iter().map(finding).collect::<Vec<_>>(),
        "notes": r.notes.iter().map(finding).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_base64_under_a_name_that_says_so() {
        let mut o = Map::new();
        put_bytes(&mut o, "body", b"{\"id\":1}");
        put_bytes(&mut o, "key", &[0xff, 0x00]);
        assert_eq!(o["body"], "{\"id\":1}");
        assert_eq!(o["key_base64"], "/wA=");
        assert_eq!(text(&[0xff, 0x00]), "base64:/wA=");
        assert_eq!(
            time(Timestamp(1_800_000_000_123)),
            "2027-01-15T08:00:00.123Z"
        );
        assert_eq!(time(Timestamp(LAST_RFC3339_MS)), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            time(Timestamp(u64::MAX)),
            format!("{} ms after the epoch", u64::MAX)
        );
    }
}
