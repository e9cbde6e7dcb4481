#!/usr/bin/env bash
# Prove the Firecracker driver on this host, in one command: exactly the
# tests that drive a real Firecracker, nothing else of the suite.
#   - banger-vmm boot_firecracker: boot, exec over hybrid vsock, stop, kill
#   - banger-cli firecracker: through banger and bangerd, boot, exec, stop,
#     start, restart, re-adopt after kill -9 of the daemon, kill; and, where
#     KVM cannot boot the kernel, a bounded, clean failure of `vm start`
#   - banger-vmm firecracker_real: every API request banger sends, accepted
#     by the real binary
#
# Run it as root on Debian or Ubuntu (it installs the packages it needs
# with apt-get; Rust comes from rustup, https://rustup.rs).
#
# Exit 0: everything passed and the boot tests booted real guests (on this
# host KVM boots standard kernels; the one test that checks the failure on
# hosts where it cannot is the expected skip). Exit 77: everything that
# could run passed, but KVM here cannot boot a standard kernel (no
# /dev/kvm, or PVM-only), so nothing about booting was proven. Anything
# else: a failure.
#
# Firecracker: $BANGER_FIRECRACKER_BIN, else `firecracker` on PATH, else
# built from source by scripts/build-firecracker.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "test-firecracker.sh needs root (apt-get, /dev/kvm, the test VMs' files): run it with sudo" >&2
  exit 1
fi
if ! command -v cargo >/dev/null; then
  echo "test-firecracker.sh needs Rust: install it with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends \
    ca-certificates curl e2fsprogs fakeroot tar gzip xz-utils zstd cpio kmod \
    busybox-static clang libclang-dev libseccomp-dev gcc make >&2
else
  echo "test-firecracker.sh: no apt-get; install e2fsprogs, fakeroot, busybox (static), cpio, kmod, clang, libclang and libseccomp yourself" >&2
fi

if [ -z "${BANGER_FIRECRACKER_BIN:-}" ]; then
  BANGER_FIRECRACKER_BIN=$(command -v firecracker || scripts/build-firecracker.sh)
fi
export BANGER_FIRECRACKER_BIN
echo "== firecracker: $BANGER_FIRECRACKER_BIN ($("$BANGER_FIRECRACKER_BIN" --version 2>/dev/null | head -n1))" >&2

cache="${BANGER_CACHE:-$PWD/.cache}"
mkdir -p "$cache"
# Plain assignments, so that a failed fetch or build stops the script.
BANGER_TEST_KERNEL_DEB="${BANGER_TEST_KERNEL_DEB:-$(scripts/fetch-kernel.sh "$cache")}"
BANGER_AGENT_BIN="${BANGER_AGENT_BIN:-$(scripts/build-agent.sh)}"
export BANGER_TEST_KERNEL_DEB BANGER_AGENT_BIN
export BANGER_SKIP_LOG="$cache/skipped-firecracker.log"
rm -f "$BANGER_SKIP_LOG"

# Which tests cannot run here, by name: where KVM boots standard kernels
# only the check of the failure elsewhere; where it cannot, the boots.
if [ -e /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then
  kvm_boots=1
  export BANGER_ALLOW_SKIP=firecracker_start_fails_fast_where_kvm_cannot_boot
else
  kvm_boots=0
  export BANGER_ALLOW_SKIP=firecracker_boots_execs_and_stops,firecracker_vm_lifecycle
fi

# The CLI tests drive the real banger and bangerd binaries.
cargo build --locked --bins -p banger-cli -p bangerd -p banger-image
status=0
cargo test --locked -p banger-vmm --test boot_firecracker --test firecracker_real || status=$?
cargo test --locked -p banger-cli --test firecracker || status=$?

skipped=0
[ -s "$BANGER_SKIP_LOG" ] && skipped=$(wc -l < "$BANGER_SKIP_LOG")
echo "== $skipped Firecracker test(s) skipped on this machine" >&2
[ "$skipped" -gt 0 ] && cat "$BANGER_SKIP_LOG" >&2
if [ "$status" -eq 0 ] && [ "$kvm_boots" -eq 0 ]; then
  echo "== KVM here cannot boot a standard kernel: no Firecracker boot was proven (exit 77)" >&2
  status=77
fi
exit "$status"
