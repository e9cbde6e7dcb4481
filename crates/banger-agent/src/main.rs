//! Guest agent: PID 1 in the banger initramfs, exec and shutdown service

fn main() {}
