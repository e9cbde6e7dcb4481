//! Builds the per-kernel banger initramfs: agent as /init plus modules
