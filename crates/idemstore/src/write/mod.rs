//! The write path: the writer thread appends and fsyncs each batch (group
//! commit, `writer.rs`), the settler thread publishes and wakes it
//! (`settler.rs`).

pub(crate) mod settler;
pub(crate) mod writer;
