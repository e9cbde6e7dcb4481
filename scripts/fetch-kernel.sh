#!/usr/bin/env bash
# Download (once) Debian's cloud kernel package into DIR and print its path.
# linux-image-cloud-amd64 is a metapackage; the kernel lives in the
# versioned package it depends on.
set -euo pipefail
dir="${1:?usage: fetch-kernel.sh DIR}"
mkdir -p "$dir"
existing=$(ls "$dir"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | grep -v -- '-dbg' | head -n1 || true)
if [ -n "$existing" ]; then echo "$existing"; exit 0; fi
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  echo "fetch-kernel.sh: cannot resolve linux-image-cloud-amd64; run apt-get update" >&2
  exit 1
fi
(cd "$dir" && apt-get download "$pkg" >/dev/null)
ls "$dir"/"$pkg"_*.deb | head -n1
