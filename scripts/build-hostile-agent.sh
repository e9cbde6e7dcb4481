#!/usr/bin/env bash
# Build the hostile guest agent of the host-trust test
# (crates/banger-agent/examples/hostile_agent.rs) as a static binary, as
# build-agent.sh builds the real one, and print its path.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked -q -p banger-agent --example hostile_agent --release \
  --target x86_64-unknown-linux-gnu >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/examples/hostile_agent"
