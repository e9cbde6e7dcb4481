#!/usr/bin/env bash
# Build (once per machine) a real Firecracker, its jailer and its seccomp
# filter from one source tarball and print the firecracker binary's path on
# stdout; everything else goes to stderr. Beside it in the same directory:
#   jailer                 the jailer of the same tree
#   seccompiler-bin        the same tree's filter compiler
#   seccomp-filter.bpf     resources/seccomp/x86_64-unknown-linux-musl.json
#                          (Firecracker's own filters) plus the few calls a
#                          glibc build makes that a musl one does not
#                          (scripts/firecracker-seccomp-gnu.json), compiled
# A glibc build compiles in only an allow-all default filter (the JSON
# filters are for musl targets), so banger hands it this one with
# `--seccomp-filter`.
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

cache="${BANGER_BUILD_CACHE:-/var/cache/banger}"
# Not root and no say: the user's own cache.
if [ -z "${BANGER_BUILD_CACHE:-}" ] && ! mkdir -p "$cache" 2>/dev/null; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/banger"
fi
# Keyed by the tarball and the build recipe (bump RECIPE when the cargo
# invocation changes); the filter is remade whenever the glibc additions
# change, without rebuilding the binaries.
RECIPE=static-glibc-stripped-1
extra="$root/scripts/firecracker-seccomp-gnu.json"
sum=$( (sha256sum < "$src"; echo "$RECIPE") | sha256sum | cut -c1-16)
out="$cache/firecracker-$sum"
bin="$out/firecracker"
want_filter=$(sha256sum < "$extra" | cut -c1-64)
built() { [ -x "$bin" ] && [ -x "$out/jailer" ] && [ -x "$out/seccompiler-bin" ]; }
filtered() { [ -f "$out/seccomp-filter.bpf" ] && [ "$(cat "$out/seccomp-filter.sha256" 2>/dev/null)" = "$want_filter" ]; }

# Firecracker's filters for its three kinds of threads, with the glibc
# build's additions merged into each thread's list, compiled by the
# tree's own seccompiler.
make_filter() {
  local work tree
  work=$(mktemp -d "$cache/firecracker-$sum.filter.XXXXXX")
  tar -xzf "$src" -C "$work" --wildcards '*/resources/seccomp/x86_64-unknown-linux-musl.json'
  tree=$(find "$work" -name x86_64-unknown-linux-musl.json | head -n1)
  python3 - "$tree" "$extra" "$work/filter.json" <<'PY'
import json, sys
base, extra, out = (json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3])
for thread, rules in extra.items():
    if thread.startswith("_"):
        continue
    base[thread]["filter"].extend(rules)
json.dump(base, open(out, "w"), indent=1)
PY
  "$out/seccompiler-bin" --target-arch x86_64 --input-file "$work/filter.json" \
    --output-file "$work/seccomp-filter.bpf" >&2
  install -m 0644 "$work/seccomp-filter.bpf" "$out/seccomp-filter.bpf"
  echo "$want_filter" > "$out/seccomp-filter.sha256"
  rm -rf "$work"
}

if built && filtered; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
# One build at a time per machine: a second caller waits, then finds the
# binary the first one installed.
exec 9>"$cache/firecracker-$sum.lock"
flock 9
if built && filtered; then echo "$bin"; exit 0; fi
if built; then make_filter; echo "$bin"; exit 0; fi

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
# Static (glibc's static-pie), as a musl build would be: the jailer runs
# Firecracker in a chroot that holds no libraries. The target's own flags
# win over the tree's build.rustflags, so that one is repeated; build
# scripts and proc-macros (host, not target) stay dynamic.
(cd "$top" && env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Ccodegen-units=1 -Ctarget-feature=+crt-static" \
  cargo build --locked --release -p firecracker -p jailer -p seccompiler \
    --target x86_64-unknown-linux-gnu >&2)
built="$top/build/cargo_target/x86_64-unknown-linux-gnu/release"
"$built/firecracker" --version >&2
if readelf -l "$built/firecracker" | grep -q 'program interpreter'; then
  echo "build-firecracker.sh: $built/firecracker is not static; the jailer's chroot holds no libraries" >&2
  exit 1
fi
"$built/jailer" --version >&2
mkdir -p "$out"
# Stripped: the jailer copies Firecracker into every VM's chroot at each
# start, and symbols are half its size.
strip "$built/firecracker" "$built/jailer"
for f in jailer seccompiler-bin; do install -m 0755 "$built/$f" "$out/$f"; done
install -m 0755 "$built/firecracker" "$bin.tmp"
mv "$bin.tmp" "$bin"
make_filter
echo "$bin"
