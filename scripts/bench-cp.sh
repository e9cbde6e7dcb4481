#!/bin/bash
# `vm cp` in and out of a Debian VM beside `scp` of the same file through
# the agent proxy (the printed `vm ssh-config`), alternating, same run.
# Ends with the `vm exec -- true` round trip (p50 of 20) on the same VM.
# usage: scripts/bench-cp.sh BINDIR AGENT [MIB] [ROUNDS]   (BINDIR holds banger, bangerd)
# Needs BANGER_TEST_KERNEL_DEB and BANGER_TEST_DEBIAN_TAR (see scripts/test.sh).
set -e
BIN=$1; AGENT=$2; MIB=${3:-64}; ROUNDS=${4:-3}
H=$(mktemp -d /tmp/banger-cpb-XXXX)
B=$BIN/banger
# Interrupted or done: the VM and the daemon go before their home does.
trap '$B vm kill deb >/dev/null 2>&1; $B daemon stop >/dev/null 2>&1; rm -rf $H' EXIT
export HOME=$H BANGER_HOME=$H/data BANGER_CONFIG=$H/config.toml BANGER_AGENT_BIN=$AGENT
printf '[network]\nmode = "none"\n' > $H/config.toml
$B kernel import --deb "${BANGER_TEST_KERNEL_DEB:?}" >/dev/null
$B image import "${BANGER_TEST_DEBIAN_TAR:?}" --name debian >/dev/null
$B vm create debian --name deb --cpus 1 --memory 512M >/dev/null
$B vm start deb >/dev/null
until $B vm exec deb -- systemctl is-active ssh >/dev/null 2>&1; do sleep 1; done
$B vm ssh-config deb > $H/ssh_config
head -c $((MIB << 20)) /dev/urandom > $H/big
mkdir -p $H/out
t() { local s=$(date +%s%N); "$@" >/dev/null; local e=$(date +%s%N); echo "$MIB $s $e" | awk '{printf "%.1f", $1 / (($3 - $2) / 1e9)}'; }
for r in $(seq 1 $ROUNDS); do
  a=$(t $B vm cp $H/big deb:/root/big-cp)
  b=$(t scp -q -F $H/ssh_config $H/big deb.vm:/root/big-scp)
  rm -f $H/out/*
  c=$(t $B vm cp deb:/root/big-cp $H/out/)
  d=$(t scp -q -F $H/ssh_config deb.vm:/root/big-scp $H/out/)
  cmp $H/big $H/out/big-cp && cmp $H/big $H/out/big-scp
  echo "round $r MiB/s: vm cp in $a, scp in $b, vm cp out $c, scp out $d"
  $B vm exec deb -- rm -f /root/big-cp /root/big-scp
done
for i in $(seq 1 20); do
  s=$(date +%s%N); $B vm exec deb -- true; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
done | sort -n | awk '{a[NR]=$1} END {print "exec true ms p50", a[int(NR/2)+1], "min", a[1], "max", a[NR]}'
