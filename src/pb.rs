//! The generated protobuf types, gRPC client and server of `spindle.v1`, and the encoded
//! file descriptor set that reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("spindle.v1");

/// Everything reflection needs to describe `spindle.v1`, google.protobuf imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("spindle_descriptor");
