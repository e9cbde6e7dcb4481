#!/usr/bin/env bash
# Build (once) a Debian bookworm root filesystem tarball with mmdebstrap into
# DIR and print its path. It has systemd as init, sshd and iproute2: the
# default image of the quickstart and of the end-to-end tests.
set -euo pipefail
dir="${1:?usage: fetch-debian-rootfs.sh DIR}"
out="$dir/debian-bookworm.tar"
mkdir -p "$dir"
if [ ! -s "$out" ]; then
  mmdebstrap --quiet --variant=minbase \
    --include=systemd-sysv,udev,iproute2,openssh-server,ca-certificates \
    bookworm "$dir/debian-bookworm.partial.tar" >&2
  mv "$dir/debian-bookworm.partial.tar" "$out"
fi
echo "$out"
