#!/usr/bin/env bash
# Build (once) a Debian bookworm root filesystem tarball with mmdebstrap into
# DIR and print its path. It has systemd as init, sshd and iproute2: the
# default image of the quickstart and of the end-to-end tests. rsync is in
# it so `rsync -e ssh` with `vm ssh-config` can be tested; a changed package
# list needs a new file name, so caches holding the old tarball rebuild.
set -euo pipefail
dir="${1:?usage: fetch-debian-rootfs.sh DIR}"
out="$dir/debian-bookworm-ssh.tar"
mkdir -p "$dir"
if [ ! -s "$out" ]; then
  mmdebstrap --quiet --variant=minbase \
    --include=systemd-sysv,udev,iproute2,openssh-server,rsync,ca-certificates \
    bookworm "$dir/debian-bookworm-ssh.partial.tar" >&2
  mv "$dir/debian-bookworm-ssh.partial.tar" "$out"
fi
echo "$out"
