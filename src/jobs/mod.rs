//! Job kinds: the [`registry`] (how a kind is defined and looked up) and the built-in kinds,
//! one module each. File kinds are confined to a [`files::FilesDir`].

pub mod checksum;
pub mod cpu;
pub mod egress;
pub mod files;
pub mod http;
pub mod noop;
pub mod registry;
pub mod sleep;
pub mod thumbnail;

use std::sync::Arc;

use files::FilesDir;
use registry::Registry;

/// A registry holding every built-in kind.
pub fn builtins(files: FilesDir, http: http::HttpConfig) -> Registry {
    let files = Arc::new(files);
    let mut registry = Registry::new();
    registry.register(sleep::kind());
    registry.register(cpu::kind());
    registry.register(noop::noop_kind());
    registry.register(noop::progress_kind());
    registry.register(checksum::kind(files.clone()));
    registry.register(thumbnail::kind(files));
    registry.register(http::kind(http));
    registry
}
