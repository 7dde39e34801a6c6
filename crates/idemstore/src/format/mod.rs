//! The on-disk format, one file per concept, byte layout above the code.
//! FORMAT.md at the crate root walks the same layouts with diagrams.
//! `primitive` holds the little-endian integers every type is built from;
//! `codec` is the public codec of a completed record (what Redis stores).

pub mod codec;
pub(crate) mod floor;
pub(crate) mod frame;
pub(crate) mod hint;
pub(crate) mod primitive;
pub(crate) mod record;
pub(crate) mod segment_header;
