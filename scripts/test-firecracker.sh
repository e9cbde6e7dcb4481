#!/usr/bin/env bash
# Prove the Firecracker driver on this host, in one command: exactly the
# tests that drive a real Firecracker, nothing else of the suite.
#   - banger-vmm boot_firecracker: boot, exec over hybrid vsock, stop, kill
#   - banger-cli firecracker: through banger and bangerd, boot, exec, stop,
#     start, restart, re-adopt after kill -9 of the daemon, kill; and, where
#     KVM cannot boot the kernel, a bounded, clean failure of `vm start`
#   - banger-vmm firecracker_real: every API request banger sends, accepted
#     by the real binary
# The boot tests need KVM that boots standard kernels (/dev/kvm, not
# PVM-only). Where it cannot, they report themselves skipped with the
# reason and this script exits 77: nothing was proven about booting here.
#
# Firecracker: $BANGER_FIRECRACKER_BIN, else `firecracker` on PATH, else
# built from source by scripts/build-firecracker.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

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

# The CLI tests drive the real banger and bangerd binaries.
cargo build --locked --bins -p banger-cli -p bangerd -p banger-image
status=0
cargo test --locked -p banger-vmm --test boot_firecracker --test firecracker_real || status=$?
cargo test --locked -p banger-cli --test firecracker || status=$?

if [ -s "$BANGER_SKIP_LOG" ]; then
  echo "== $(wc -l < "$BANGER_SKIP_LOG") Firecracker test(s) skipped on this machine:" >&2
  cat "$BANGER_SKIP_LOG" >&2
  [ "$status" -eq 0 ] && status=77
fi
exit "$status"
