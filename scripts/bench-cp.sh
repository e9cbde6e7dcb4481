#!/bin/bash
# `vm cp` in and out of a Debian VM beside `scp` of the same file through
# the agent proxy (the printed `vm ssh-config`), in the same run: each
# round runs vm cp in, scp in, vm cp out, scp out, checks all four copies
# byte for byte, and the medians over the rounds are printed in MB/s
# (10^6 bytes a second). Ends with the `vm exec -- true` round trip.
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
echo "before: $(uptime)"
# MB/s of one copy of the file; the figure also goes to $H/rate.<what>.
t() {
  local what=$1 s e; shift
  s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N)
  echo "$MIB $s $e" | awk '{printf "%.2f\n", $1 * 1048576 / 1e6 / (($3 - $2) / 1e9)}' | tee -a $H/rate.$what
}
for r in $(seq 1 $ROUNDS); do
  a=$(t cp_in $B vm cp $H/big deb:/root/big-cp)
  b=$(t scp_in scp -q -F $H/ssh_config $H/big deb.vm:/root/big-scp)
  rm -f $H/out/*
  c=$(t cp_out $B vm cp deb:/root/big-cp $H/out/)
  d=$(t scp_out scp -q -F $H/ssh_config deb.vm:/root/big-scp $H/out/)
  cmp $H/big $H/out/big-cp && cmp $H/big $H/out/big-scp
  echo "round $r MB/s: vm cp in $a, scp in $b, vm cp out $c, scp out $d"
  $B vm exec deb -- rm -f /root/big-cp /root/big-scp
done
echo "after: $(uptime)"
med() { sort -n $H/rate.$1 | awk '{a[NR]=$1} END {printf "%.2f (min %.2f, max %.2f)", (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), a[1], a[NR]}'; }
echo "median of $ROUNDS rounds, $MIB MiB, MB/s:"
echo "  into the VM:   vm cp $(med cp_in), scp $(med scp_in)"
echo "  out of the VM: vm cp $(med cp_out), scp $(med scp_out)"
for i in $(seq 1 20); do
  s=$(date +%s%N); $B vm exec deb -- true </dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
done | sort -n | awk '{a[NR]=$1} END {print "exec true ms p50", a[int((NR+1)/2)], "min", a[1], "max", a[NR]}'
