//! bangerd: the per-user banger daemon

fn main() {}
