#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every unit, integration and
# end-to-end test of the workspace. Needs the packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# The real Debian cloud kernel package, for kernel-import and boot tests.
cache="${BANGER_CACHE:-$PWD/.cache}"
export BANGER_TEST_KERNEL_DEB="${BANGER_TEST_KERNEL_DEB:-$(scripts/fetch-kernel.sh "$cache")}"
export BANGER_TEST_DEBIAN_TAR="${BANGER_TEST_DEBIAN_TAR:-$(scripts/fetch-debian-rootfs.sh "$cache")}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
