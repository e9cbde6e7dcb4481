#!/bin/bash
# Exec throughput and `vm exec -- true` latency on a running busybox VM.
# usage: scripts/bench-agent-throughput.sh BINDIR AGENT  (BINDIR holds banger, bangerd)
# Needs BANGER_TEST_KERNEL_DEB (the Debian kernel .deb, see scripts/fetch-kernel.sh).
set -e
BIN=$1; AGENT=$2
H=$(mktemp -d /tmp/banger-tput-XXXX)
export HOME=$H BANGER_HOME=$H/data BANGER_CONFIG=$H/config.toml BANGER_AGENT_BIN=$AGENT
# No host networking: the bench must not make a bridge or NAT on the host.
printf '[network]\nmode = "none"\n' > $H/config.toml
R=$H/rootfs; mkdir -p $R/bin; cp /usr/bin/busybox $R/bin/
for a in sh cat head wc true dd; do ln -s busybox $R/bin/$a; done
for d in root etc proc sys dev tmp run; do mkdir -p $R/$d; done
$BIN/banger kernel import --deb "${BANGER_TEST_KERNEL_DEB:?set BANGER_TEST_KERNEL_DEB to the kernel .deb}" >/dev/null
$BIN/banger image import $R --name busybox >/dev/null
$BIN/banger vm create busybox --name bb --cpus 1 --memory 256M >/dev/null
$BIN/banger vm start bb >/dev/null
for i in 1 2; do
  s=$(date +%s.%N); n=$($BIN/banger vm exec bb -- head -c 67108864 /dev/zero | wc -c); e=$(date +%s.%N)
  echo "exec 64 MiB out: $n bytes in $(echo "$e - $s" | bc) s"
done
s=$(date +%s.%N); head -c 67108864 /dev/zero | $BIN/banger vm exec -i bb -- wc -c; e=$(date +%s.%N)
echo "exec 64 MiB in: $(echo "$e - $s" | bc) s"
# (the `vm exec -- true` round trip alone, against a baseline: scripts/bench-exec.sh)
for i in $(seq 1 20); do
  s=$(date +%s%N); $BIN/banger vm exec bb -- true; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
done | sort -n | awk '{a[NR]=$1} END {print "exec true ms p50", a[int(NR/2)+1], "min", a[1], "max", a[NR]}'
$BIN/banger vm kill bb >/dev/null; $BIN/banger daemon stop >/dev/null
rm -rf $H
