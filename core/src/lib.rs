//! The pure core of Triton: names every component shares, and (in later modules) batch planning
//! and phase transitions. Nothing here talks to a server.

pub mod names;
pub mod release;
