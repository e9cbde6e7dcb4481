//! banger: the command-line client

fn main() {}
