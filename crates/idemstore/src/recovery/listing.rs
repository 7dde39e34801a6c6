//! Listing the store's files on open: the segments, their hint files, the
//! next free segment id, and the orphaned hints to remove.

use super::read::MAX_SEGMENT_FILE;
use crate::error::{Error, Result, advice};
use crate::format::hint;
use crate::format::segment_header;
use crate::index;
use crate::storage::{Storage, remove_if_present};
use std::path::Path;

/// The segment and hint files in the store's directory.
pub(super) struct Listing {
    /// Segment files by id, in id order.
    pub(super) names: Vec<(u32, String)>,
    /// Hint files, with the id of the segment each one names.
    pub(super) hint_files: Vec<(u32, String)>,
    /// Above the id of every file seen, hint files included.
    pub(super) next_segment_id: u32,
}

/// Lists the segment and hint files in `storage`.
pub(super) fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let listing = storage
        .list()
        .map_err(|e| Error::io("listing", dir.to_path_buf(), e, advice::OPEN))?;
    let mut names: Vec<(u32, String)> = listing
        .iter()
        .filter_map(|n| segment_header::parse_file_name(n).map(|(_, id)| (id, n.clone())))
        .collect();
    names.sort();
    let hint_files: Vec<(u32, String)> = listing
        .iter()
        .filter_map(|n| {
            let seg = hint::segment_name_for(n)?;
            segment_header::parse_file_name(&seg).map(|(_, id)| (id, n.clone()))
        })
        .collect();
    // No id of any file seen is reused, hint files included.
    let next_segment_id = names
        .iter()
        .map(|(id, _)| *id)
        .chain(hint_files.iter().map(|(id, _)| *id))
        .max()
        .map_or(1, |id| id.wrapping_add(1))
        .max(1);
    Ok(Listing {
        names,
        hint_files,
        next_segment_id,
    })
}

/// Removes every hint file whose segment is gone: a hint must not outlive
/// its segment (see hints.rs). Returns whether it removed any.
pub(super) fn remove_orphaned_hints(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
) -> Result<bool> {
    let mut removed_any = false;
    for (_, h) in &listing.hint_files {
        let has_segment =
            hint::segment_name_for(h).is_some_and(|s| listing.names.iter().any(|(_, n)| *n == s));
        if !has_segment {
            // Its segment is gone: it must not outlive it (see hints.rs).
            remove_if_present(storage, h)
                .map_err(|e| Error::io("removing orphaned hint", dir.join(h), e, advice::OPEN))?;
            removed_any = true;
        }
    }
    Ok(removed_any)
}

/// Room for the entries the hint files claim, spread evenly over the
/// shards (the index key is a uniform digest) with a margin: the
/// candidate lists then hardly ever grow, which would copy them and,
/// while they are the largest thing open allocates, leave up to half of
/// each unused. A claim is bounded by the length of the hint and of its
/// segment (`load` refuses a hint longer than its segment, and no segment
/// is read past `MAX_SEGMENT_FILE`), so garbage on disk reserves at most
/// ~1.4 bytes per byte of segment; and room that cannot be had is
/// skipped, not fatal (the lists then grow as they fill).
pub(super) fn claimed_per_shard(storage: &dyn Storage, names: &[(u32, String)]) -> usize {
    let claimed: u64 = names
        .iter()
        .filter_map(|(_, name)| {
            let seg_len = storage.open(name).ok()?.len().ok()?.min(MAX_SEGMENT_FILE);
            let file = storage.open(&hint::name_for(name)?).ok()?;
            let mut head = [0u8; hint::HEADER_LEN];
            file.read_exact_at(&mut head, 0).ok()?;
            hint::claimed_entries(&head, file.len().ok()?.min(seg_len))
        })
        .sum();
    usize::try_from(claimed / index::SHARDS as u64)
        .unwrap_or(0)
        .saturating_mul(21)
        / 20
}
