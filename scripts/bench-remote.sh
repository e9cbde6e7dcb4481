#!/bin/bash
# banger over ssh against the same daemon used on its own host, in one run:
#  - `vm ls` and `vm exec -- true`, after a first command opened the shared
#    ssh connection (alternating, 20 each);
#  - `workspace sync` of a real checkout (a clone of REPO, its whole
#    history) over ssh, on the remote host itself, and `rsync -a -e ssh` of
#    the same tree to the remote host;
#  - `vm cp` of MIB MiB into the VM over ssh and on the remote host, and
#    `scp` of the same file to the remote host.
# The "remote host" is a network namespace running the real sshd for a user
# made here, the "laptop" a second namespace across a veth pair (the remote
# test suite's setup); "local" is the same command on the remote host, as
# its user, against the same daemon and the same VM.
# usage (as root): scripts/bench-remote.sh BINDIR AGENT [MIB] [ROUNDS] [REPO]
# PARTS=latency,workspace,cp (the default) picks what runs.
# BINDIR holds banger, bangerd, banger-rootfs; needs BANGER_TEST_KERNEL_DEB,
# BANGER_TEST_DEBIAN_TAR, openssh-server, rsync, git.
set -e
BIN=$(realpath "$1"); AGENT=$(realpath "$2"); MIB=${3:-256}; ROUNDS=${4:-3}
REPO=${5:-$(git rev-parse --show-toplevel)}
N=$$; D=/tmp/bgb-$N; U=bangerb$N; L=bgb-lap-$N; R=bgb-rem-$N; IP=10.232.0.2
SSHD=

rem() {
  ip netns exec $R setpriv --reuid=$U --regid=$U --clear-groups \
    env -i PATH=$BIN:/usr/bin:/bin HOME=$D/home BANGER_AGENT_BIN=$AGENT $BIN/banger "$@"
}
lap() {
  ip netns exec $L env -i PATH=/usr/bin:/bin HOME=$D/laptop BANGER_HOME=$D/laptop/data \
    BANGER_CONFIG=$D/laptop/config.toml XDG_RUNTIME_DIR=$D/xdg \
    BANGER_SSH_COMMAND="ssh -F $D/ssh_config" BANGER_HOST=ssh://remote $BIN/banger "$@"
}
cleanup() {
  set +e
  rem vm kill deb >/dev/null 2>&1
  rem daemon stop >/dev/null 2>&1
  for s in $D/xdg/banger-ssh/*; do
    [ -S "$s" ] && ip netns exec $L ssh -F $D/ssh_config -S "$s" -O exit remote >/dev/null 2>&1
  done
  [ -n "$SSHD" ] && kill $SSHD
  for p in $(ps -o pid= -u $U 2>/dev/null); do kill -9 $p; done
  sleep 0.5
  userdel $U 2>/dev/null
  ip netns del $L 2>/dev/null; ip netns del $R 2>/dev/null
  rm -rf $D
}
trap cleanup EXIT

mkdir -p $D/laptop $D/xdg; chmod 755 $D; chmod 700 $D/xdg
useradd --system --user-group --create-home --shell /bin/sh --password '*' --home-dir $D/home $U
mkdir -p $D/home/.config/banger
printf '[network]\nmode = "none"\n\n[vm]\nwarm_templates = false\n' > $D/home/.config/banger/config.toml
printf '[network]\nmode = "none"\n' > $D/laptop/config.toml
cp "${BANGER_TEST_KERNEL_DEB:?}" $D/home/kernel.deb
cp "${BANGER_TEST_DEBIAN_TAR:?}" $D/home/debian.tar
chown -R $U:$U $D/home
ssh-keygen -q -t ed25519 -N '' -f $D/host_key; ssh-keygen -q -t ed25519 -N '' -f $D/client_key
cut -d' ' -f1-2 $D/client_key.pub > $D/authorized_keys; chmod 644 $D/authorized_keys
echo "remote $(cut -d' ' -f1-2 $D/host_key.pub)" > $D/known_hosts
cat > $D/sshd_config <<EOF
ListenAddress $IP:22
HostKey $D/host_key
AuthorizedKeysFile $D/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers $U
Subsystem sftp internal-sftp
SetEnv PATH=$BIN:/usr/bin:/bin BANGER_AGENT_BIN=$AGENT
EOF
cat > $D/ssh_config <<EOF
Host remote
  HostName $IP
  User $U
  IdentityFile $D/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $D/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  HostKeyAlias remote
EOF
ip netns add $L; ip netns add $R
ip -n $L link set lo up; ip -n $R link set lo up
ip -n $L link add bgbl0 type veth peer name bgbr0 netns $R
ip -n $L addr add 10.232.0.1/24 dev bgbl0; ip -n $L link set bgbl0 up
ip -n $R addr add $IP/24 dev bgbr0; ip -n $R link set bgbr0 up
mkdir -p /run/sshd
ip netns exec $R /usr/sbin/sshd -D -e -f $D/sshd_config 2>$D/sshd.log &
SSHD=$!
until ip netns exec $R ss -ltnH | grep -q "$IP:22 "; do sleep 0.1; done

# The daemon starts through ssh, as a user's first command would start it.
lap vm ls >/dev/null
rem kernel import --deb $D/home/kernel.deb >/dev/null
rem image import $D/home/debian.tar --name debian >/dev/null
rem vm create debian --name deb --cpus 2 --memory 1G >/dev/null
rem vm start deb >/dev/null
# Measure an idle guest: its init done booting.
rem vm exec deb -- systemctl is-system-running --wait >/dev/null 2>&1 || true
echo "before: $(uptime)"

# Milliseconds a command takes, its output dropped; a failure stops the run.
ms() {
  local s e; s=$(date +%s%N)
  if ! "$@" >/dev/null 2>$D/err </dev/null; then echo "failed: $*: $(tail -1 $D/err)" >&2; return 1; fi
  e=$(date +%s%N)
  awk -v s=$s -v e=$e 'BEGIN {printf "%.1f\n", (e - s) / 1e6}'
}
med() { sort -n $D/t.$1 | awk '{a[NR]=$1} END {printf "%.1f (min %.1f, max %.1f)", (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), a[1], a[NR]}'; }

PARTS=${PARTS:-latency,workspace,cp}
part() { case ",$PARTS," in *",$1,"*) return 0;; *) return 1;; esac; }
lap vm exec deb -- true
part latency && for i in $(seq 1 20); do
  ms rem vm ls >> $D/t.ls_local; ms lap vm ls >> $D/t.ls_ssh
  ms rem vm exec deb -- true >> $D/t.exec_local; ms lap vm exec deb -- true >> $D/t.exec_ssh
done
part latency && echo "vm ls ms, median of 20: here $(med ls_local), over ssh $(med ls_ssh)"
part latency && echo "vm exec -- true ms, median of 20: here $(med exec_local), over ssh $(med exec_ssh)"

# Workspace sync of a real checkout: its whole history and working tree.
if part workspace; then
git clone -q --no-local "$REPO" $D/laptop/proj
git clone -q --no-local "$REPO" $D/home/proj; chown -R $U:$U $D/home/proj
BYTES=$(du -sb $D/laptop/proj | cut -f1)
echo "checkout: $(du -sh $D/laptop/proj | cut -f1) ($BYTES bytes, .git $(du -sh $D/laptop/proj/.git | cut -f1)), $(git -C $D/laptop/proj rev-list --all --count) commits"
rate() { awk -v b=$BYTES -v t=$1 'BEGIN {printf "%.2f", b / 1e6 / (t / 1000)}'; }
# rsync into the VM itself: ssh through the remote host (vm ssh-config's
# ProxyCommand), the same destination as the workspace sync.
lap vm ssh-config deb > $D/vm_ssh_config
vrsync() { ip netns exec $L env XDG_RUNTIME_DIR=$D/xdg rsync -a -e "ssh -F $D/vm_ssh_config" "$@"; }
for r in $(seq 1 $ROUNDS); do
  a=$(ms lap workspace sync deb $D/laptop/proj --workspace-path /root/ws-ssh-$r)
  b=$(ms rem workspace sync deb $D/home/proj --workspace-path /root/ws-local-$r)
  c=$(ms ip netns exec $L rsync -a -e "ssh -F $D/ssh_config" $D/laptop/proj/ remote:$D/home/rsync-$r/)
  v=$(ms vrsync $D/laptop/proj/ deb.vm:/root/rsync-$r/)
  echo $a >> $D/t.ws_ssh; echo $b >> $D/t.ws_local; echo $c >> $D/t.rsync; echo $v >> $D/t.vrsync
  echo "round $r ms: workspace sync over ssh $a ($(rate $a) MB/s), here $b ($(rate $b) MB/s), rsync -a -e ssh to the host $c ($(rate $c) MB/s), into the VM $v ($(rate $v) MB/s)"
  rem vm exec deb -- rm -rf /root/ws-ssh-$r /root/ws-local-$r /root/rsync-$r >/dev/null
  rm -rf $D/home/rsync-$r
done
echo "workspace sync ms, median of $ROUNDS: over ssh $(med ws_ssh), here $(med ws_local), rsync -a -e ssh to the host $(med rsync), into the VM $(med vrsync)"
fi

# vm cp of one file, and scp of the same file to the remote host.
if part cp; then
head -c $((MIB << 20)) /dev/urandom > $D/laptop/big
cp $D/laptop/big $D/home/big; chown $U:$U $D/home/big
mbs() { awk -v m=$MIB -v t=$1 'BEGIN {printf "%.2f", m * 1048576 / 1e6 / (t / 1000)}'; }
for r in $(seq 1 $ROUNDS); do
  a=$(ms lap vm cp $D/laptop/big deb:/root/big-ssh)
  b=$(ms rem vm cp $D/home/big deb:/root/big-local)
  c=$(ms ip netns exec $L scp -q -F $D/ssh_config $D/laptop/big remote:$D/home/big-scp)
  lap vm exec deb -- cmp /root/big-ssh /root/big-local >/dev/null
  echo $a >> $D/t.cp_ssh; echo $b >> $D/t.cp_local; echo $c >> $D/t.scp
  echo "round $r, $MIB MiB: vm cp over ssh $(mbs $a) MB/s, here $(mbs $b) MB/s, scp $(mbs $c) MB/s"
  rem vm exec deb -- rm -f /root/big-ssh /root/big-local >/dev/null
  rm -f $D/home/big-scp
done
echo "vm cp ms, median of $ROUNDS: over ssh $(med cp_ssh), here $(med cp_local), scp $(med scp)"
fi
echo "after: $(uptime)"
