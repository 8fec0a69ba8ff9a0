//! The pure core of Triton: names every component shares ([`names`]) and the release
//! arithmetic and predicates ([`release`]). Nothing here talks to a server.

#[cfg(feature = "logging")]
pub mod logging;
pub mod names;
pub mod release;
