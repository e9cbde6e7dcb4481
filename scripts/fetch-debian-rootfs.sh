#!/usr/bin/env bash
# Build (once) a Debian bookworm root filesystem tarball with mmdebstrap into
# DIR and print its path. It has systemd as init, sshd, iproute2 and git
# (workspaces clone into the guest): the default image of the quickstart and
# of the end-to-end tests. The file name changes whenever the package list
# does, so a cache built from an older list is never mistaken for this one.
set -euo pipefail
dir="${1:?usage: fetch-debian-rootfs.sh DIR}"
out="$dir/debian-bookworm-dev.tar"
mkdir -p "$dir"
if [ ! -s "$out" ]; then
  mmdebstrap --quiet --variant=minbase \
    --include=systemd-sysv,udev,iproute2,openssh-server,ca-certificates,git \
    bookworm "$out.partial" >&2
  mv "$out.partial" "$out"
fi
echo "$out"
