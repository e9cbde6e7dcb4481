#!/usr/bin/env bash
# From a fresh Debian machine to a running banger: install the system
# packages, build and install banger, import Debian's cloud kernel and a
# Debian bookworm image, then boot a VM and print its /etc/os-release.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
prefix="${PREFIX:-/usr/local}"
cache="${BANGER_CACHE:-$PWD/.cache}"

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "==> installing system packages"
sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q
sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  ca-certificates e2fsprogs fakeroot tar gzip xz-utils zstd cpio kmod \
  qemu-system-x86 busybox-static iproute2 nftables mmdebstrap openssh-client

echo "==> building banger"
cargo build --release --locked --workspace
agent=$(scripts/build-agent.sh)
for b in banger bangerd banger-rootfs; do
  sudo_if_needed install -m 0755 "target/release/$b" "$prefix/bin/$b"
done
# The guest agent is static (it is /init of each VM's initramfs).
sudo_if_needed install -m 0755 "$agent" "$prefix/bin/banger-agent"

echo "==> importing the default kernel (Debian linux-image-cloud-amd64)"
deb=$(scripts/fetch-kernel.sh "$cache")
banger kernel ls --json | grep -q '"name"' || banger kernel import --deb "$deb" >/dev/null

echo "==> importing the default image (Debian bookworm via mmdebstrap)"
if ! banger image show debian-bookworm >/dev/null 2>&1; then
  banger image import "$(scripts/fetch-debian-rootfs.sh "$cache")" --name debian-bookworm >/dev/null
fi

echo "==> booting a VM and running a command in it"
banger doctor | grep -E '^(ok|warn)  +vmm' || true
banger vm run debian-bookworm --rm -- cat /etc/os-release
