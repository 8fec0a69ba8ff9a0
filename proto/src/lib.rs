//! Triton's gRPC API, generated at build time from `protos/` (see `build.rs`).
//!
//! Packages and field numbers are those of the original Triton, so a client generated from its
//! protos works against ours.

#![allow(clippy::all, missing_docs)]

pub mod deployflow {
    tonic::include_proto!("deployflow");
}

pub mod application {
    tonic::include_proto!("application");
}

pub mod pod {
    tonic::include_proto!("pod");
}

/// The readiness agent's reports (not in the original).
pub mod agent {
    tonic::include_proto!("agent");
}

/// The encoded `FileDescriptorSet` of every file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/triton_descriptor.bin"));
