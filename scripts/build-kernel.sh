#!/usr/bin/env bash
# Build banger's guest kernel and print the directory holding it:
#   vmlinux   ELF, what Firecracker loads (QEMU boots it too: CONFIG_PVH)
#   bzImage   the same kernel as an x86 boot image
#   config    its .config (also embedded: CONFIG_IKCONFIG)
# from Debian's linux-source-6.1 with Firecracker's published microvm guest
# config plus what banger needs built in (scripts/kernel/banger.config), so
# it boots under both VMMs with no modules. `banger kernel import DIR/vmlinux`
# or `DIR/bzImage` imports it.
#
# The result is cached by a hash of everything that goes into it (source
# package, both config files, this script) under
# ${BANGER_BUILD_CACHE:-/var/cache/banger}/kernel/<hash>/, outside the
# clone, so a machine builds each kernel once. The build runs under nice.
#
# Needs: apt-get (to download linux-source-6.1), gcc, make, bc, flex, bison,
# libelf-dev, libssl-dev; and Firecracker's source tarball
# (BANGER_FC_SRC, default ../shared/firecracker/firecracker-v1.16.1-src.tar.gz).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache="${BANGER_BUILD_CACHE:-/var/cache/banger}"
fc_src="${BANGER_FC_SRC:-$repo/../shared/firecracker/firecracker-v1.16.1-src.tar.gz}"
fc_config="firecracker-v1.16.1/resources/guest_configs/microvm-kernel-ci-x86_64-6.1.config"
banger_config="$repo/scripts/kernel/banger.config"
jobs="${BANGER_BUILD_JOBS:-$(nproc)}"

missing=()
for tool in gcc make bc flex bison perl xz; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -f /usr/include/gelf.h ] || missing+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-kernel.sh: missing ${missing[*]}: apt-get install gcc make bc flex bison libelf-dev libssl-dev xz-utils" >&2
  exit 1
fi
[ -f "$fc_src" ] || { echo "build-kernel.sh: no Firecracker source at $fc_src (set BANGER_FC_SRC)" >&2; exit 1; }

mkdir -p "$cache/downloads"
# The source package: whatever linux-source-6.1 apt resolves, fetched once.
pkg_file=$(apt-cache show --no-all-versions linux-source-6.1 | sed -n 's/^Filename: //p' | head -1)
pkg_sha=$(apt-cache show --no-all-versions linux-source-6.1 | sed -n 's/^SHA256: //p' | head -1)
[ -n "$pkg_file" ] || { echo "build-kernel.sh: apt knows no linux-source-6.1 (apt-get update?)" >&2; exit 1; }
deb="$cache/downloads/$(basename "$pkg_file")"
if [ ! -f "$deb" ] || ! echo "$pkg_sha  $deb" | sha256sum -c --quiet 2>/dev/null; then
  (cd "$cache/downloads" && apt-get download -q linux-source-6.1 >&2)
  echo "$pkg_sha  $deb" | sha256sum -c --quiet
fi

tmp=$(mktemp -d "$cache/.build-kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar xzf "$fc_src" -C "$tmp" "$fc_config"
key=$(cat <(echo "$pkg_sha") "$tmp/$fc_config" "$banger_config" "$0" | sha256sum | cut -c1-16)
out="$cache/kernel/$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "$out"
  exit 0
fi

echo "build-kernel.sh: building $key from $(basename "$deb") (minutes)" >&2
dpkg-deb --fsys-tarfile "$deb" | tar x -C "$tmp" --wildcards './usr/src/linux-source-6.1.tar.xz'
tar xJf "$tmp/usr/src/linux-source-6.1.tar.xz" -C "$tmp"
src="$tmp/linux-source-6.1"
cp "$tmp/$fc_config" "$src/.config"
# merge_config.sh -m keeps the fragment's values over the base; olddefconfig
# then settles the dependencies it implies.
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$banger_config" >&2)
nice -n 19 make -C "$src" -s olddefconfig >&2
# A value the fragment asked for and Kconfig dropped would boot a kernel
# that is not what we said: fail instead.
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  grep -qxF "$line" "$src/.config" || { echo "build-kernel.sh: $line did not survive olddefconfig" >&2; exit 1; }
done < "$banger_config"
nice -n 19 make -C "$src" -s -j"$jobs" vmlinux bzImage >&2

mkdir -p "$tmp/out"
cp "$src/vmlinux" "$tmp/out/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$tmp/out/bzImage"
cp "$src/.config" "$tmp/out/config"
mkdir -p "$cache/kernel"
rm -rf "$out"
mv "$tmp/out" "$out"
echo "$out"
