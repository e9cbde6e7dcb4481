#!/bin/sh
# Snapshot save and restore under QEMU: for each guest memory size, boot a
# busybox VM, dirty most of its memory (so the state is not mostly zero
# pages), then ROUNDS times: `vm snapshot` (wall time of the CLI, the VM
# paused for the save and run again) and `vm restore --name` (copy of the
# disks, QEMU -incoming, cont, identity) followed by `vm rm --force` of the
# restored VM. Prints each round and the medians, and the snapshot's state
# and disk sizes.
#
# Needs: target/debug/{banger,bangerd} built, BANGER_AGENT_BIN,
# BANGER_TEST_KERNEL_DEB (`. /work/wt/env.sh`), busybox-static.
# Usage: scripts/bench-snapshot.sh [ROUNDS] [MEM...]   (default 5 256M 1G)
set -eu
rounds=${1:-5}
[ $# -gt 0 ] && shift
mems=${*:-256M 1G}
root=$(cd "$(dirname "$0")/.." && pwd)
home=$(mktemp -d /tmp/banger-bench-snap.XXXXXX)
export HOME="$home" BANGER_HOME="$home/data" BANGER_CONFIG="$home/config.toml"
printf '[network]\nmode = "none"\n' >"$BANGER_CONFIG"
b="$root/target/debug/banger"
cleanup() { "$b" daemon stop >/dev/null 2>&1 || true; rm -rf "$home"; }
trap cleanup EXIT
mkdir -p "$home/bb/bin" "$home/bb/root" "$home/bb/etc" "$home/bb/proc" "$home/bb/sys" "$home/bb/dev" "$home/bb/tmp" "$home/bb/run"
cp "$(command -v busybox)" "$home/bb/bin/busybox"
for a in sh cat echo sleep true mount sync head dd; do ln -s busybox "$home/bb/bin/$a"; done
"$b" kernel import --deb "$BANGER_TEST_KERNEL_DEB" >/dev/null
"$b" image import "$home/bb" --name busybox >/dev/null
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mem in $mems; do
  vm="bench-$(echo "$mem" | tr 'A-Z' 'a-z')"
  "$b" vm create busybox --name "$vm" --cpus 1 --memory "$mem" >/dev/null
  "$b" vm start "$vm" >/dev/null
  # Fill ~60% of guest memory with random bytes held in a tmpfs.
  mib=$(echo "$mem" | sed 's/G$/*1024/; s/M$//' | bc)
  fill=$((mib * 6 / 10))
  "$b" vm exec "$vm" -- sh -c "mkdir -p /fill && mount -t tmpfs -o size=${fill}m none /fill && \
    dd if=/dev/urandom of=/fill/x bs=1M count=$((fill - 16)) 2>/dev/null"
  : >"$home/save" ; : >"$home/restore"
  for i in $(seq "$rounds"); do
    t0=$(now); "$b" vm snapshot "$vm" --name "s$i" >/dev/null; t1=$(now)
    "$b" vm restore "s$i" --name "r$i" >/dev/null; t2=$(now)
    "$b" vm rm --force "r$i" >/dev/null
    s=$(echo "$t1 - $t0" | bc); r=$(echo "$t2 - $t1" | bc)
    echo "$s" >>"$home/save"; echo "$r" >>"$home/restore"
    echo "$mem round $i: save ${s}s restore ${r}s"
  done
  sizes=$("$b" snapshot show s1 --json | sed -n 's/.*"state_bytes": *\([0-9]*\).*"disk_bytes": *\([0-9]*\).*/\1 \2/p')
  [ -n "$sizes" ] || sizes=$("$b" snapshot show s1 --json | tr -d '\n ' | sed 's/.*"state_bytes":\([0-9]*\),"disk_bytes":\([0-9]*\).*/\1 \2/')
  echo "$mem median: save $(median <"$home/save")s restore $(median <"$home/restore")s; state+disks of s1 (bytes): $sizes"
  for i in $(seq "$rounds"); do "$b" snapshot rm "s$i" >/dev/null; done
  "$b" vm rm --force "$vm" >/dev/null
done
