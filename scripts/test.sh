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

# The same kernel unpacked (vmlinuz + modules/<release>/) for the VMM and
# initramfs crates' own boot tests, which run below the daemon.
kdir="$cache/kernel"
if [ ! -e "$kdir/vmlinuz" ]; then
  rm -rf "$cache/kernel.x" "$kdir"
  dpkg-deb -x "$BANGER_TEST_KERNEL_DEB" "$cache/kernel.x"
  mkdir -p "$kdir/modules"
  cp "$cache"/kernel.x/boot/vmlinuz-* "$kdir/vmlinuz"
  cp -a "$cache"/kernel.x/lib/modules/* "$kdir/modules/"
  rm -rf "$cache/kernel.x"
fi
export BANGER_TEST_KERNEL_DIR="$kdir"
# banger's own guest kernel (built once per input hash, cached outside the
# clone in ${BANGER_BUILD_CACHE:-/var/cache/banger}; the first build takes
# many minutes).
export BANGER_TEST_BUILT_KERNEL="${BANGER_TEST_BUILT_KERNEL:-$(scripts/build-kernel.sh)}"
# The guest agent must be static: it is /init of an initramfs with no libc.
export BANGER_AGENT_BIN="${BANGER_AGENT_BIN:-$(scripts/build-agent.sh)}"
# A real Firecracker, built once per machine (cached outside the clone),
# for the API acceptance tests against the real process. (A plain
# assignment, so a failed build stops the run: `export X=$(...)` would not.)
BANGER_FIRECRACKER_BIN="${BANGER_FIRECRACKER_BIN:-$(scripts/build-firecracker.sh)}"
export BANGER_FIRECRACKER_BIN

# schemathesis (pinned, in a venv under ~/.cache/banger) for the API fuzz
# test, crates/banger-cli/tests/api_fuzz.rs.
export BANGER_SCHEMATHESIS="${BANGER_SCHEMATHESIS:-$(scripts/schemathesis.sh)}"

# The issue's 1 GiB for the vm cp round trip and its memory bound (minutes
# under TCG; a developer loop can set it lower).
export BANGER_TEST_CP_MIB="${BANGER_TEST_CP_MIB:-1024}"

# A test that cannot run here fails, unless it is named in
# BANGER_ALLOW_SKIP (comma-separated test names; `.ci/run` names the ones
# our machines cannot run). Those that skip say so in this log, printed at
# the end with their count.
export BANGER_SKIP_LOG="$cache/skipped.log"
rm -f "$BANGER_SKIP_LOG"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The CLI's tests drive the real bangerd and banger-rootfs binaries, which
# cargo test does not build for another package's tests.
cargo build --workspace --locked --bins
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
skipped=0
[ -s "$BANGER_SKIP_LOG" ] && skipped=$(wc -l < "$BANGER_SKIP_LOG")
echo "== $skipped test(s) skipped on this machine (allowed: ${BANGER_ALLOW_SKIP:-none})"
[ "$skipped" -gt 0 ] && cat "$BANGER_SKIP_LOG"
exit "$status"
