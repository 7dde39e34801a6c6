//! `LAST-OPEN`: what the last writable open of a directory found, left in
//! the directory for whoever looks next (an operator after a crash, once
//! the service has restarted and repaired what the crash left).
//!
//! Text, one `name value` per line, written (not fsynced) after each
//! writable open's recovery. Derived and best effort: a crash can leave it
//! missing or cut short, which only loses this account, and a build
//! without it ignores the file (FORMAT.md).

use super::report::RecoveryReport;
use crate::clock::Timestamp;
use crate::storage::{Storage, remove_if_present};
use std::time::Duration;

/// The file's name in the store directory.
pub(crate) const FILE_NAME: &str = "LAST-OPEN";

/// The first line, which names the format.
const MAGIC: &str = "idemstore last open v1";

/// What an earlier writable open of the store found, as it left it in the
/// directory (see [`Store::previous_open`](crate::Store::previous_open)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastOpen {
    /// When it opened, by its clock.
    pub at: Timestamp,
    /// The process that opened it.
    pub pid: u32,
    /// What its recovery found. `abandoned` is empty: only their number
    /// is kept, in [`LastOpen::abandoned`].
    pub report: RecoveryReport,
    /// How many reservations it found abandoned.
    pub abandoned: u64,
}

/// The counters of a report, by the names the file uses.
fn fields(r: &mut RecoveryReport) -> [(&'static str, &mut u64); 12] {
    [
        ("segments_read", &mut r.segments_read),
        ("records_read", &mut r.records_read),
        ("completed_live", &mut r.completed_live),
        ("pending_live", &mut r.pending_live),
        ("torn_tails", &mut r.torn_tails),
        ("bytes_truncated", &mut r.bytes_truncated),
        ("corrupt_regions", &mut r.corrupt_regions),
        ("corrupt_bytes", &mut r.corrupt_bytes),
        ("undecodable_records", &mut r.undecodable_records),
        ("segments_from_hints", &mut r.segments_from_hints),
        ("expired_segments_removed", &mut r.expired_segments_removed),
        ("empty_segments_removed", &mut r.empty_segments_removed),
    ]
}

/// Replaces the file with what `report` says, opened at `at`. Best effort:
/// a failure leaves no file or an old one, and changes nothing else.
pub(crate) fn write(storage: &dyn Storage, report: &RecoveryReport, at: Timestamp) {
    let mut r = report.clone();
    let mut text = format!(
        "{MAGIC}\nat_ms {}\npid {}\nabandoned {}\nunreadable_segments {}\nhints_written {}\nduration_us {}\n",
        at.0,
        std::process::id(),
        r.abandoned.len(),
        r.unreadable_segments.len(),
        r.hints_written,
        r.duration.as_micros()
    );
    for (name, v) in fields(&mut r) {
        text.push_str(&format!("{name} {v}\n"));
    }
    let _ = remove_if_present(storage, FILE_NAME)
        .and_then(|()| storage.create(FILE_NAME))
        .and_then(|f| f.write_all_at(text.as_bytes(), 0));
}

/// What the file says, if there is one in this format. Lines it does not
/// know are skipped; a number it lacks is 0.
pub(crate) fn read(storage: &dyn Storage) -> Option<LastOpen> {
    let file = storage.open(FILE_NAME).ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?.min(64 << 10);
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut out = LastOpen::default();
    for line in lines {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<u64>() else {
            continue;
        };
        match name {
            "at_ms" => out.at = Timestamp(v),
            "pid" => out.pid = u32::try_from(v).unwrap_or_default(),
            "abandoned" => out.abandoned = v,
            "hints_written" => out.report.hints_written = v,
            "duration_us" => out.report.duration = Duration::from_micros(v),
            _ => {
                if let Some((_, f)) = fields(&mut out.report)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                {
                    *f = v;
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn what_is_written_reads_back_and_damage_reads_as_nothing_or_zeros() {
        let st = MemStorage::new();
        assert_eq!(read(&st), None);
        let report = RecoveryReport {
            segments_read: 3,
            torn_tails: 1,
            bytes_truncated: 77,
            duration: Duration::from_micros(1500),
            ..RecoveryReport::default()
        };
        write(&st, &report, Timestamp(42));
        let got = read(&st).unwrap();
        assert_eq!((got.at, got.pid), (Timestamp(42), std::process::id()));
        assert_eq!(got.report, report);
        // Cut short by a crash: what survived, zeros for the rest.
        let bytes = st.file_bytes(FILE_NAME).unwrap();
        let cut = bytes.iter().position(|&b| b == b'\n').unwrap() + 10;
        st.put_file(FILE_NAME, bytes[..cut].to_vec());
        assert_eq!(read(&st).unwrap().report.segments_read, 0);
        st.put_file(FILE_NAME, b"something else".to_vec());
        assert_eq!(read(&st), None);
    }
}
