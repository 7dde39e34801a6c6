//! Checking a store directory byte by byte, trusting nothing: every frame's
//! checksums, every record's decoding and its place in its segment's
//! bucket, every hint file against the segment it describes, and that no
//! sequence number is used twice. It only reads (no lock), so it is safe
//! beside a running store; see [`verify`].

use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::{Error, Result, advice};
use crate::format::frame::{Scanned, Scanner};
use crate::format::record::{self, Body, Record};
use crate::format::segment_header::{self, SegmentHeader};
use crate::format::{floor, hint};
use crate::hints;
use crate::recovery::MAX_SEGMENT_FILE;
use crate::storage::{FsStorage, Storage, read_all, read_all_shrinking};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// One thing [`verify`] found, where it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file's name in the store directory.
    pub file: String,
    /// The byte offset in the file, where one place is meant.
    pub offset: Option<u64>,
    /// What is wrong, or worth knowing.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {o}: {}", self.file, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// What [`verify`] read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files read.
    pub segments: u64,
    /// Records read (every one decoded whole).
    pub records: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Hint files compared with their segments.
    pub hints_checked: u64,
    /// The sequence floor (FORMAT.md), 0 without a floor file.
    pub floor: u64,
    /// Damage: data that is not what the store wrote, or that an open
    /// would trust wrongly. Restore those files from a backup, or move them
    /// away (their records are then lost).
    pub problems: Vec<Finding>,
    /// What a crash or a running store leaves, which the next open deals
    /// with by itself (a torn tail, a hint to rewrite, an ended bucket).
    pub notes: Vec<Finding>,
}

impl VerifyReport {
    /// True when no damage was found (notes may remain).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads every segment and hint file of the store in `dir` and checks them
/// (see the module docs), without the directory's lock and without
/// changing anything. `progress` is told the bytes read so far and the
/// bytes to read, after each segment.
///
/// Beside a running store, the segment it appends to ends in a record
/// being written or in zeros written ahead: neither is damage. What a hint
/// file covers was whole when it was written, so in a hinted segment any
/// frame that does not check out is damage, even the last one; in a
/// segment without a hint a damaged last frame cannot be told from a write
/// a crash cut short, and is a note.
///
/// ```
/// # use idemstore::*;
/// # let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Config::default())?;
/// let Begin::Reserved(r) = store.begin(Tenant::new("t"), Key::new("k"), Fingerprint::of(b"x"))? else { unreachable!() };
/// r.complete(Response::new(201, "created"))?;
/// store.close()?;
/// let report = verify(dir.path(), &Config::default(), &mut |_, _| {})?;
/// assert!(report.is_clean(), "{:?}", report.problems);
/// assert_eq!((report.records, report.hints_checked), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify(
    dir: impl AsRef<Path>,
    config: &Config,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let storage = FsStorage::read_only(dir)
        .map_err(|e| Error::io("opening", dir, e, advice::OPEN_READ_ONLY))?;
    verify_storage(&storage, config, progress)
}

/// [`verify`] on any [`Storage`] (which it only reads).
pub fn verify_storage(
    storage: &dyn Storage,
    config: &Config,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let dir = storage.location();
    let names = storage
        .list()
        .map_err(|e| Error::io("listing", dir.clone(), e, advice::OPEN_READ_ONLY))?;
    let mut segments: Vec<(u32, Timestamp, String)> = names
        .iter()
        .filter_map(|n| segment_header::parse_file_name(n).map(|(end, id)| (id, end, n.clone())))
        .collect();
    segments.sort();
    let mut v = Verifier {
        storage,
        config,
        now: config.clock.now(),
        report: VerifyReport::default(),
        seqs: Vec::new(),
        names: HashMap::new(),
    };
    v.check_floor();
    for n in &names {
        if let Some(seg) = hint::segment_name_for(n)
            && !names.contains(&seg)
        {
            v.note(
                n,
                None,
                "a hint whose segment is gone (open removes it)".into(),
            );
        }
    }
    let sizes: Vec<u64> = segments
        .iter()
        .map(|(_, _, n)| storage.open(n).and_then(|f| f.len()).unwrap_or_default())
        .collect();
    let total: u64 = sizes.iter().sum();
    for (id, name_end, name) in &segments {
        v.names.insert(*id, name.clone());
        v.segment(*id, *name_end, name)?;
        progress(v.report.bytes, total.max(v.report.bytes));
    }
    v.duplicate_seqs();
    Ok(v.report)
}

struct Verifier<'a> {
    storage: &'a dyn Storage,
    config: &'a Config,
    now: Timestamp,
    report: VerifyReport,
    /// Every record's sequence number, with its segment id and offset:
    /// sorted once all are read, to find any used twice (16 bytes a record).
    seqs: Vec<(u64, u32, u64)>,
    /// Segment names by id, for naming a duplicate's other place.
    names: HashMap<u32, String>,
}

impl Verifier<'_> {
    fn problem(&mut self, file: &str, offset: Option<u64>, what: String) {
        self.report.problems.push(Finding {
            file: file.to_owned(),
            offset,
            what,
        });
    }

    fn note(&mut self, file: &str, offset: Option<u64>, what: String) {
        self.report.notes.push(Finding {
            file: file.to_owned(),
            offset,
            what,
        });
    }

    fn read_err(&self, name: &str) -> impl Fn(std::io::Error) -> Error {
        let path = self.storage.location().join(name);
        move |e| Error::io("reading", path.clone(), e, advice::OPEN_READ_ONLY)
    }

    /// Both slots of the floor file: a damaged one is a note (a crash while
    /// it was written leaves that), both damaged a problem.
    fn check_floor(&mut self) {
        let Ok(file) = self.storage.open(floor::FILE_NAME) else {
            return;
        };
        let mut intact = 0;
        for at in floor::SLOTS {
            let mut slot = [0u8; floor::LEN];
            if file.read_exact_at(&mut slot, at).is_err() {
                continue;
            }
            match floor::decode(&slot) {
                Ok(floor::Decoded::Floor { floor, .. }) => {
                    intact += 1;
                    self.report.floor = self.report.floor.max(floor);
                }
                Ok(floor::Decoded::Newer(found)) => self.problem(
                    floor::FILE_NAME,
                    Some(at),
                    format!("floor version {found} is newer than this build reads"),
                ),
                Err(e) => self.note(
                    floor::FILE_NAME,
                    Some(at),
                    format!("slot does not check out ({e}); the other slot holds the floor"),
                ),
            }
        }
        if intact == 0 {
            self.problem(
                floor::FILE_NAME,
                None,
                "no intact slot: fencing tokens may restart lower after expiry".into(),
            );
        }
    }

    fn segment(&mut self, id: u32, name_end: Timestamp, name: &str) -> Result<()> {
        let file = match self.storage.open(name) {
            Ok(f) => f,
            // Deleted since the listing: a running store's compactor.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.read_err(name)(e)),
        };
        let len = file.len().map_err(self.read_err(name))?;
        if len > MAX_SEGMENT_FILE {
            self.problem(
                name,
                None,
                format!("{len} bytes: larger than any segment this format writes (not read)"),
            );
            return Ok(());
        }
        let bytes = read_all_shrinking(file.as_ref()).map_err(self.read_err(name))?;
        self.report.segments += 1;
        self.report.bytes += bytes.len() as u64;
        if bytes.len() < segment_header::LEN || bytes.iter().all(|&b| b == 0) {
            self.note(
                name,
                None,
                "no header: a creation cut short (open removes it)".into(),
            );
            return Ok(());
        }
        let header = match SegmentHeader::decode(&bytes[..segment_header::LEN]) {
            Ok(h) => h,
            Err(e) => {
                self.problem(name, Some(0), format!("segment header: {e}"));
                return Ok(());
            }
        };
        if header.id != id || header.bucket_end != name_end {
            self.problem(
                name,
                Some(0),
                format!(
                    "the header says segment {} of the bucket ending at {}, the name says {id} and {}",
                    header.id, header.bucket_end.0, name_end.0
                ),
            );
            return Ok(());
        }
        if header.bucket_end <= self.now {
            self.note(
                name,
                None,
                "its bucket ended: the compactor or the next open deletes it".into(),
            );
            return Ok(());
        }
        let hint = self.matching_hint(name, &header, bytes.len() as u64);
        let hinted = hint.is_some();
        let base = segment_header::LEN as u64;
        for item in Scanner::new(&bytes[segment_header::LEN..], id, base) {
            match item {
                Scanned::Record { offset, payload } => {
                    self.record(name, &header, base + offset as u64, payload);
                }
                Scanned::Corrupt { offset, len } => self.problem(
                    name,
                    Some(base + offset as u64),
                    format!("{len} damaged bytes (their checksums fail) before a valid record"),
                ),
                Scanned::TornTail { offset } => {
                    let at = segment_header::LEN + offset;
                    if bytes[at..].iter().all(|&b| b == 0) {
                        // Zeros written ahead of the append point.
                        continue;
                    }
                    let what = format!("the last {} bytes are no whole record", bytes.len() - at);
                    if hinted {
                        self.problem(
                            name,
                            Some(at as u64),
                            format!("{what}, in bytes its hint file says were whole: damage"),
                        );
                    } else {
                        self.note(
                            name,
                            Some(at as u64),
                            format!(
                                "{what}: a write cut short, or being written (open truncates it)"
                            ),
                        );
                    }
                }
            }
        }
        if let Some((hint_name, h, listed)) = hint {
            self.compare_hint(&hint_name, &header, &bytes, &h, &listed);
        }
        Ok(())
    }

    /// One whole frame's record: it decodes, it expires inside its
    /// segment's bucket, and its sequence number is its own.
    fn record(&mut self, name: &str, header: &SegmentHeader, at: u64, payload: &[u8]) {
        let rec = match Record::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                let newer = payload.len() > 1 && payload[1] > record::VERSION;
                let what = if newer {
                    format!(
                        "record version {} is newer than this build reads",
                        payload[1]
                    )
                } else {
                    format!("the record's checksums hold but it does not decode: {e}")
                };
                self.problem(name, Some(at), what);
                return;
            }
        };
        self.report.records += 1;
        let (_, live_until) = rec.body.kind_and_live_until();
        if live_until >= header.bucket_end {
            self.problem(
                name,
                Some(at),
                format!(
                    "the record means something until {}, after its bucket ends at {}",
                    live_until.0, header.bucket_end.0
                ),
            );
        }
        if let Body::Completed(c) = &rec.body
            && (c.expires_at < header.bucket_start
                || c.completed_at > c.expires_at
                || c.started_at > c.completed_at)
        {
            self.problem(
                name,
                Some(at),
                format!(
                    "a completion started {}, completed {} and expiring {} does not belong in the bucket [{}, {})",
                    c.started_at.0,
                    c.completed_at.0,
                    c.expires_at.0,
                    header.bucket_start.0,
                    header.bucket_end.0
                ),
            );
        }
        if let Body::Expired { expired_at, until } = rec.body
            && (until < header.bucket_start || expired_at > until)
        {
            self.problem(
                name,
                Some(at),
                format!(
                    "a tombstone of a record expired at {} and refused until {} does not belong in the bucket [{}, {})",
                    expired_at.0, until.0, header.bucket_start.0, header.bucket_end.0
                ),
            );
        }
        self.seqs.push((rec.seq, header.id, at));
    }

    /// Every sequence number used by two records is a problem.
    fn duplicate_seqs(&mut self) {
        let mut seqs = std::mem::take(&mut self.seqs);
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            let ((s, id_a, at_a), (t, id_b, at_b)) = (w[0], w[1]);
            if s == t {
                let (a, b) = (self.name(id_a), self.name(id_b));
                self.problem(
                    &b,
                    Some(at_b),
                    format!("sequence number {s} also numbers the record in {a} at offset {at_a}"),
                );
            }
        }
    }

    fn name(&self, id: u32) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("segment {id}"))
    }

    /// The segment's hint file, if it has one that matches the segment
    /// (`len` bytes): its name, header and entries. Then every byte it
    /// covers must be whole frames.
    fn matching_hint(
        &mut self,
        seg_name: &str,
        header: &SegmentHeader,
        len: u64,
    ) -> Option<(String, hint::Header, Vec<Option<hint::Entry>>)> {
        let name = hint::name_for(seg_name)?;
        let file = self.storage.open(&name).ok()?;
        let Ok(buf) = read_all(file.as_ref()) else {
            self.note(&name, None, "unreadable (open rescans the segment)".into());
            return None;
        };
        self.report.hints_checked += 1;
        let (h, body) = match hint::decode(&buf) {
            Ok(d) => d,
            Err(e) => {
                self.note(
                    &name,
                    None,
                    format!("{e}: a write cut short (open rescans the segment and rewrites it)"),
                );
                return None;
            }
        };
        if !hints::matches(&h, header, len, self.config.index_hash) {
            self.note(
                &name,
                None,
                "does not match its segment (open ignores it and rescans)".into(),
            );
            return None;
        }
        let listed = hint::entries(body).map(Result::ok).collect();
        Some((name, h, listed))
    }

    /// A matching hint's entries and counts against what the segment's
    /// bytes hold: open trusts them instead of reading the segment.
    fn compare_hint(
        &mut self,
        name: &str,
        header: &SegmentHeader,
        bytes: &[u8],
        h: &hint::Header,
        listed: &[Option<hint::Entry>],
    ) {
        let base = segment_header::LEN as u64;
        let hash = self.config.index_hash;
        let scan = hints::scan(&bytes[segment_header::LEN..], header.id, base, hash);
        let expected = hints::newest_per_key(&scan.entries);
        let mismatch = listed.len() != expected.len()
            || listed
                .iter()
                .zip(&expected)
                .any(|(l, e)| l.as_ref() != Some(e));
        if mismatch {
            self.problem(
                name,
                None,
                format!(
                    "lists {} entries that are not the {} newest records of its segment: \
                     open would index it wrongly (delete the hint)",
                    listed.len(),
                    expected.len()
                ),
            );
        } else if h.max_seq != scan.max_seq || h.records != scan.records {
            self.problem(
                name,
                None,
                format!(
                    "says {} records up to seq {}, the segment holds {} up to {} (delete the hint)",
                    h.records, h.max_seq, scan.records, scan.max_seq
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Begin, Fingerprint, Key, Response, Store, Tenant};

    /// A closed store with three completions; its segment's name.
    fn store(dir: &Path) -> String {
        let s = Store::open(dir, Config::default()).unwrap();
        for k in ["a", "b", "c"] {
            let Begin::Reserved(r) = s
                .begin(Tenant::new("t"), Key::new(k), Fingerprint::of(b"x"))
                .unwrap()
            else {
                panic!("fresh key")
            };
            r.complete(Response::new(200, "body")).unwrap();
        }
        s.close().unwrap();
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.ends_with(".seg"))
            .unwrap()
    }

    fn run(dir: &Path) -> VerifyReport {
        verify(dir, &Config::default(), &mut |_, _| {}).unwrap()
    }

    #[test]
    fn a_clean_store_is_clean_and_every_record_is_read() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        let r = run(dir.path());
        assert!(r.is_clean() && r.notes.is_empty(), "{r:?}");
        assert_eq!((r.segments, r.hints_checked), (1, 1));
        // Three completions, and a reservation record for each whose
        // completion missed its group commit (on a loaded machine, some do).
        assert!((3..=6).contains(&r.records), "{r:?}");
        assert!(r.floor > 0);
    }

    #[test]
    fn a_flipped_byte_is_named_with_its_file_and_offset_wherever_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let seg = store(dir.path());
        let path = dir.path().join(&seg);
        let clean = std::fs::read(&path).unwrap();
        // Every byte after the segment header: in a frame's header or its
        // payload, in the middle record or the last.
        for at in (segment_header::LEN..clean.len()).step_by(7) {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            let r = run(dir.path());
            assert!(!r.is_clean(), "flip at {at} not found");
            let f = &r.problems[0];
            assert_eq!(f.file, seg);
            let off = f.offset.unwrap() as usize;
            assert!(off <= at, "flip at {at} reported at {off}");
        }
        std::fs::write(&path, &clean).unwrap();
        assert!(run(dir.path()).is_clean());
    }

    #[test]
    fn a_hint_that_lies_about_its_segment_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let seg = store(dir.path());
        let hint_name = hint::name_for(&seg).unwrap();
        let buf = std::fs::read(dir.path().join(&hint_name)).unwrap();
        let (h, body) = hint::decode(&buf).unwrap();
        let mut entries: Vec<hint::Entry> = hint::entries(body).map(|e| e.unwrap()).collect();
        entries[0].seq += 100;
        std::fs::write(dir.path().join(&hint_name), hint::encode(&h, &entries)).unwrap();
        let r = run(dir.path());
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert_eq!(r.problems[0].file, hint_name);
    }

    #[test]
    fn a_tail_cut_short_without_a_hint_is_a_note_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let seg = store(dir.path());
        std::fs::remove_file(dir.path().join(hint::name_for(&seg).unwrap())).unwrap();
        let path = dir.path().join(&seg);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes).unwrap();
        let r = run(dir.path());
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.notes.len(), 1, "{r:?}");
        assert_eq!(r.records, 2);
    }
}
