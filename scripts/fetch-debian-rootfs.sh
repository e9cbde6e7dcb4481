#!/usr/bin/env bash
# Build (once) a Debian bookworm root filesystem tarball with mmdebstrap into
# DIR and print its path. It has systemd as init, sshd, iproute2, git
# (workspaces clone into the guest) and rsync (`rsync -e ssh` with `vm
# ssh-config` is tested): the default image of the quickstart and of the
# end-to-end tests. The file name changes whenever the package list does,
# so a cache built from an older list is never mistaken for this one.
set -euo pipefail
dir="${1:?usage: fetch-debian-rootfs.sh DIR}"
out="$dir/debian-bookworm-git-rsync.tar"
mkdir -p "$dir"
if [ ! -s "$out" ]; then
  mmdebstrap --quiet --variant=minbase \
    --include=systemd-sysv,udev,iproute2,openssh-server,rsync,ca-certificates,git \
    bookworm "$dir/debian-bookworm-git-rsync.partial.tar" >&2
  mv "$dir/debian-bookworm-git-rsync.partial.tar" "$out"
fi
echo "$out"
