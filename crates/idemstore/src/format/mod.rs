//! The on-disk format, one file per concept, byte layout above the code.
//! FORMAT.md at the crate root walks the same layouts with diagrams.

pub(crate) mod codec;
pub(crate) mod floor;
pub(crate) mod frame;
pub(crate) mod hint;
pub(crate) mod record;
pub(crate) mod segment_header;
