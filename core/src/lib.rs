//! The pure core of Triton: names every component shares ([`names`]), the API's decisions
//! ([`api`]) and the release
//! arithmetic and predicates ([`release`]). Nothing here talks to a server.

pub mod api;
#[cfg(feature = "logging")]
pub mod logging;
pub mod names;
pub mod release;
#[cfg(feature = "tls")]
pub mod tls;
