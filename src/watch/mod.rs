//! Watch: the event history ring and the hub that fans applied events out to every subscriber
//! ([`hub`]), and the filters subscribers choose ([`filter`]).

pub mod filter;
pub mod hub;

pub use filter::Filter;
pub use hub::{Interruption, Published, WatchHub};
