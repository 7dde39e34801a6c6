//! The write path: the writer thread appends and fsyncs each batch
//! (`writer.rs`), keeping it open for the group-commit window
//! (`group_commit.rs`), into the segments it appends to (`active.rs`, with
//! the one fsync helper); the settler thread publishes and wakes it
//! (`settler.rs`).

pub(crate) mod active;
pub(crate) mod group_commit;
pub(crate) mod settler;
pub(crate) mod writer;
