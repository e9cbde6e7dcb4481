#!/bin/bash
# `banger vm start` host side (the start report's prepare + network +
# spawn: everything before the guest runs) of a cold start on a busybox
# VM, p50/min/max of N; with a second build, the same on a VM of that
# build, the two alternating start by start in the same run. Each start
# is followed by a `vm kill`.
# usage: scripts/bench-start.sh BINDIR AGENT [N [BASE_BINDIR BASE_AGENT]]
#   BINDIR holds banger, bangerd and banger-rootfs; AGENT is a static
#   banger-agent (scripts/build-agent.sh). Needs BANGER_TEST_KERNEL_DEB.
set -e
N=${3:-15}
T=$(mktemp -d /tmp/banger-startb-XXXX)
homes=()
cleanup() {
  for h in "${homes[@]}"; do
    HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$(cat $h/bin)/banger" vm kill bb >/dev/null 2>&1 || true
    HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$(cat $h/bin)/banger" daemon stop >/dev/null 2>&1 || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
# One home, daemon and VM per build. No host networking and no boot
# templates: every start is a cold boot that touches nothing outside.
setup() {
  local h=$T/$1 bin=$2 agent=$3
  mkdir -p $h/rootfs/bin; homes+=($h); echo "$bin" > $h/bin
  printf '[network]\nmode = "none"\n[vm]\nwarm_templates = false\n' > $h/config.toml
  cp /usr/bin/busybox $h/rootfs/bin/
  for a in sh true; do ln -s busybox $h/rootfs/bin/$a; done
  for d in root etc proc sys dev tmp run; do mkdir -p $h/rootfs/$d; done
  (
    export HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml BANGER_AGENT_BIN=$agent
    trap 'cat $h/setup.log' ERR
    $bin/banger kernel import --deb "${BANGER_TEST_KERNEL_DEB:?set BANGER_TEST_KERNEL_DEB}" >/dev/null 2>>$h/setup.log
    $bin/banger image import $h/rootfs --name busybox >/dev/null 2>>$h/setup.log
    $bin/banger vm create busybox --name bb --cpus 1 --memory 256M >/dev/null 2>>$h/setup.log
    # Warm up: the first start builds the initramfs and pages binaries in.
    $bin/banger vm start bb >/dev/null 2>>$h/setup.log
    $bin/banger vm kill bb >/dev/null 2>>$h/setup.log
  )
}
# One cold start of build $1's VM: its host-side ms (prepare + network +
# spawn from the start report), then a kill.
once() {
  local h=$T/$1 bin
  bin=$(cat $h/bin)
  HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$bin/banger" vm start bb --json </dev/null \
    | python3 -c 'import json,sys; t=json.load(sys.stdin)["timings"]; print("%.2f" % (t["prepare_ms"] + t["network_ms"] + t["spawn_ms"]))' >>$T/$1.ms
  HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$bin/banger" vm kill bb >/dev/null </dev/null
}
stats() {
  sort -n $T/$1.ms | awk -v w="$2" '{a[NR]=$1} END {printf "%s: vm start host side ms p50 %.1f min %.1f max %.1f (n=%d)\n", w, a[int((NR+1)/2)], a[1], a[NR], NR}'
}
setup test "$1" "$2"
[ -n "$4" ] && setup base "$4" "$5"
echo "before: $(uptime)"
for i in $(seq 1 $N); do
  once test
  [ -n "$4" ] && once base
done
echo "after: $(uptime)"
stats test "$1"
[ -n "$4" ] && stats base "$4"
