//! The registry fixtures live in the test kit, shared with the CLI's
//! end-to-end tests.

#![allow(dead_code)]

use std::path::PathBuf;

pub use banger_testkit::registry::*;

/// The `banger-rootfs` worker built beside this test binary.
pub fn worker() -> PathBuf {
    banger_testkit::bin_dir().join("banger-rootfs")
}
