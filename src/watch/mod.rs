//! Watch: the event history ring and the hub that fans applied events out to every subscriber
//! ([`hub`]), the bells that wake a thread's streams together ([`bell`]), and the filters
//! subscribers choose ([`filter`]).

pub(crate) mod bell;
pub mod filter;
pub mod hub;

pub use filter::Filter;
pub use hub::{Interruption, Published, WatchHub};
