#!/usr/bin/env bash
# Build (once per machine) a real Firecracker from its source tarball and
# print the binary's path on stdout; everything else goes to stderr.
#
# The tarball is Firecracker's source with its one git dependency vendored
# (see its BANGER-README), so it builds from package registries alone. The
# result is cached OUTSIDE the clone, keyed by the tarball's sha256, so every
# clone and CI run on a machine shares one build (~5 min on 2 cores):
#   ${BANGER_BUILD_CACHE:-/var/cache/banger}/firecracker-<sha256[:16]>/firecracker
# (~/.cache/banger instead when /var/cache/banger cannot be created).
#
# BANGER_FIRECRACKER_SRC overrides the tarball; by default it is
# ../shared/firecracker/firecracker-v1.16.1-src.tar.gz beside the clone (or
# beside the main checkout when this is a git worktree).
# Needs clang, libclang-dev and libseccomp-dev (.ci/run installs them).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name=firecracker-v1.16.1-src.tar.gz

src="${BANGER_FIRECRACKER_SRC:-}"
if [ -z "$src" ]; then
  candidates=("$root/../shared/firecracker/$name")
  common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  [ -n "$common" ] && candidates+=("$(dirname "$common")/../shared/firecracker/$name")
  for c in "${candidates[@]}"; do
    if [ -f "$c" ]; then src="$c"; break; fi
  done
  if [ -z "$src" ]; then
    echo "build-firecracker.sh: $name not found (looked at ${candidates[*]}); set BANGER_FIRECRACKER_SRC" >&2
    exit 1
  fi
fi
[ -f "$src" ] || { echo "build-firecracker.sh: $src does not exist" >&2; exit 1; }

sum=$(sha256sum "$src" | cut -c1-16)
cache="${BANGER_BUILD_CACHE:-/var/cache/banger}"
# Not root and no say: the user's own cache.
if [ -z "${BANGER_BUILD_CACHE:-}" ] && ! mkdir -p "$cache" 2>/dev/null; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/banger"
fi
out="$cache/firecracker-$sum"
bin="$out/firecracker"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
# One build at a time per machine: a second caller waits, then finds the
# binary the first one installed.
exec 9>"$cache/firecracker-$sum.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

for tool in clang cargo; do
  command -v "$tool" >/dev/null || {
    echo "build-firecracker.sh: needs $tool (apt-get install clang libclang-dev libseccomp-dev)" >&2
    exit 1
  }
done

work=$(mktemp -d "$cache/firecracker-$sum.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-firecracker.sh: building Firecracker from $src in $work (takes minutes, once)" >&2
tar -xzf "$src" -C "$work"
top=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -f "$top/Cargo.toml" ] || { echo "build-firecracker.sh: $src has no Cargo.toml at its top" >&2; exit 1; }
# Its rust-toolchain.toml picks the toolchain; its .cargo/config.toml sets
# the target dir and flags, which our environment must not override.
(cd "$top" && env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
  cargo build --locked --release -p firecracker --target x86_64-unknown-linux-gnu >&2)
built="$top/build/cargo_target/x86_64-unknown-linux-gnu/release/firecracker"
"$built" --version >&2
mkdir -p "$out"
install -m 0755 "$built" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
