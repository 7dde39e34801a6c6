//! The public face of the engine: [`Store`], [`Begin`] and [`Reservation`].
//! `lifecycle` opens and closes a store; `begin` answers `begin` and `get`;
//! `reservation` holds a reserved key until it completes or aborts; `admin`
//! holds what an operator does beside requests (list, release, purge).

mod admin;
mod begin;
mod lifecycle;
mod reservation;

pub use admin::{LiveRecord, Records, SegmentInfo};
pub use begin::{Begin, Expired, InFlight, KeyState, Mismatch};
pub use lifecycle::{Stats, Store};
pub use reservation::Reservation;
