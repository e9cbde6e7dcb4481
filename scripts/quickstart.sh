#!/usr/bin/env bash
# From a fresh Debian machine to a running banger: install the system
# packages, build and install banger, import Debian's cloud kernel and a
# Debian bookworm image, then create a VM (and, once booting lands, run a
# command in it).
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
for b in banger bangerd banger-rootfs; do
  sudo_if_needed install -m 0755 "target/release/$b" "$prefix/bin/$b"
done

echo "==> importing the default kernel (Debian linux-image-cloud-amd64)"
deb=$(scripts/fetch-kernel.sh "$cache")
banger kernel ls --json | grep -q '"name"' || banger kernel import --deb "$deb"

echo "==> importing the default image (Debian bookworm via mmdebstrap)"
if ! banger image show debian-bookworm >/dev/null 2>&1; then
  tarball="$cache/debian-bookworm.tar"
  [ -s "$tarball" ] || mmdebstrap --quiet --variant=minbase \
    --include=systemd-sysv,udev,iproute2,openssh-server,ca-certificates \
    bookworm "$tarball"
  banger image import "$tarball" --name debian-bookworm
fi

echo "==> creating a VM"
banger vm create debian-bookworm --name quickstart >/dev/null 2>&1 || true
banger vm show quickstart
