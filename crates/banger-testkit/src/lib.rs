//! Test fixtures: temporary homes, tiny rootfs trees, tool checks
