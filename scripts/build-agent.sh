#!/usr/bin/env bash
# Build the guest agent as a static binary (it is /init of an initramfs with
# no libc) and print its path. The explicit --target keeps RUSTFLAGS away
# from build scripts and proc-macros, which must stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
flag=(); [ "$profile" = release ] && flag=(--release)
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked -q -p banger-agent "${flag[@]}" --target x86_64-unknown-linux-gnu >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/$profile/banger-agent"
