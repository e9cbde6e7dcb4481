#!/bin/bash
# `banger vm exec VM -- true` round trip on a running busybox VM, CLI
# process included, p50/min/max of N; with a second build, the same on a
# VM of that build, the two alternating call by call in the same run.
# usage: scripts/bench-exec.sh BINDIR AGENT [N [BASE_BINDIR BASE_AGENT]]
#   BINDIR holds banger, bangerd and banger-rootfs; AGENT is a static
#   banger-agent (scripts/build-agent.sh). Needs BANGER_TEST_KERNEL_DEB.
set -e
N=${3:-30}
T=$(mktemp -d /tmp/banger-execb-XXXX)
homes=()
cleanup() {
  for h in "${homes[@]}"; do
    HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$(cat $h/bin)/banger" vm kill bb >/dev/null 2>&1 || true
    HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml "$(cat $h/bin)/banger" daemon stop >/dev/null 2>&1 || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
# One home, daemon and VM per build. No host networking: nothing outside
# the VM is touched.
boot() {
  local h=$T/$1 bin=$2 agent=$3
  mkdir -p $h/rootfs/bin; homes+=($h); echo "$bin" > $h/bin
  printf '[network]\nmode = "none"\n' > $h/config.toml
  cp /usr/bin/busybox $h/rootfs/bin/
  for a in sh true; do ln -s busybox $h/rootfs/bin/$a; done
  for d in root etc proc sys dev tmp run; do mkdir -p $h/rootfs/$d; done
  (
    export HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml BANGER_AGENT_BIN=$agent
    # Progress goes to a log, shown if a step fails.
    trap 'cat $h/setup.log' ERR
    $bin/banger kernel import --deb "${BANGER_TEST_KERNEL_DEB:?set BANGER_TEST_KERNEL_DEB}" >/dev/null 2>>$h/setup.log
    $bin/banger image import $h/rootfs --name busybox >/dev/null 2>>$h/setup.log
    $bin/banger vm create busybox --name bb --cpus 1 --memory 256M >/dev/null 2>>$h/setup.log
    $bin/banger vm start bb >/dev/null 2>>$h/setup.log
    # Warm up: the first execs page the binaries in on both sides.
    for i in 1 2 3; do $bin/banger vm exec bb -- true; done
  )
}
# Milliseconds (0.1 ms resolution) of one exec of build $1's VM.
once() {
  local h=$T/$1 bin
  bin=$(cat $h/bin)
  HOME=$h BANGER_HOME=$h/data BANGER_CONFIG=$h/config.toml bash -c \
    's=$(date +%s%N); "$0"/banger vm exec bb -- true </dev/null; e=$(date +%s%N); echo $(( (e - s) / 100000 ))' "$bin" >>$T/$1.ms
}
stats() {
  sort -n $T/$1.ms | awk -v w="$2" '{a[NR]=$1/10} END {printf "%s: exec true ms p50 %.1f min %.1f max %.1f (n=%d)\n", w, a[int((NR+1)/2)], a[1], a[NR], NR}'
}
boot test "$1" "$2"
[ -n "$4" ] && boot base "$4" "$5"
echo "before: $(uptime)"
for i in $(seq 1 $N); do
  once test
  [ -n "$4" ] && once base
done
echo "after: $(uptime)"
stats test "$1"
[ -n "$4" ] && stats base "$4"
exit 0
