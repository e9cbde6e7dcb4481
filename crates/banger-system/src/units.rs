//! The unit files `system install` writes, rendered from an `InstallSpec`.
//!
//! Three units:
//! - `banger-helper.service`: the root helper, sandboxed to what netlink,
//!   nftables, /dev/net/tun and port 53 need;
//! - `bangerd@.service`: the owner's daemon as a template instantiated with
//!   the owner's user name (`bangerd@alice.service`): a system unit with
//!   `User=`, so root manages both services the same way and the daemon runs
//!   at boot without a login session or lingering;
//! - `banger-split-dns.service` (only where systemd-resolved runs): registers
//!   the bridge as the DNS server for `~<domain>` each time the bridge
//!   appears.
//!
//! Each non-obvious line carries a comment in the unit itself, so whoever
//! reads /etc/systemd/system learns why it is there.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::InstallSpec;

/// The root helper's unit.
pub const HELPER_UNIT: &str = "banger-helper.service";
/// The daemon's template; instances are named by `daemon_unit`.
pub const DAEMON_TEMPLATE: &str = "bangerd@.service";
/// The split-DNS registration's unit.
pub const SPLIT_DNS_UNIT: &str = "banger-split-dns.service";
/// The helper's runtime directory under /run (its socket lives there).
pub const HELPER_RUNTIME_DIR: &str = "banger-helper";
/// The helper's policy file, relative to the install root.
pub const HELPER_CONFIG: &str = "etc/banger/helper.toml";
/// Where the helper keeps its state (guests, ports) across a restart.
pub const HELPER_STATE: &str = "/run/banger-helper/state.json";
/// Where the helper listens unless told otherwise.
pub const DEFAULT_HELPER_SOCKET: &str = "/run/banger-helper/helper.sock";

/// `bangerd@<user>.service`.
pub fn daemon_unit(user: &str) -> String {
    format!("bangerd@{user}.service")
}

/// The runtime directory the daemon unit gives the owner's daemon:
/// `/run/bangerd-<uid>`, banger-config's [`system_runtime_dir`]. The CLI
/// prefers that directory to `XDG_RUNTIME_DIR` whenever it exists, so a
/// CLI in a login session finds the unit-started daemon's socket
/// (`/run/bangerd-<uid>/<data dir key>/bangerd.sock`) and shares its lock.
///
/// [`system_runtime_dir`]: banger_config::paths::system_runtime_dir
pub fn daemon_runtime_dir(uid: u32) -> PathBuf {
    banger_config::paths::system_runtime_dir(uid)
}

/// The device unit systemd creates when the bridge link appears (udev tags
/// every network interface for systemd), e.g.
/// `sys-subsystem-net-devices-banger0.device`.
pub fn bridge_device_unit(bridge: &str) -> String {
    format!(
        "{}.device",
        escape_path(&format!("/sys/subsystem/net/devices/{bridge}"))
    )
}

/// `systemd-escape --path`: strip the slashes at either end, `/` becomes
/// `-`, and every byte outside `[A-Za-z0-9:_.]` (and a leading `.`) becomes
/// `\xNN`.
fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(char::from(b))
            }
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

fn bin(spec: &InstallSpec, name: &str) -> PathBuf {
    spec.prefix.join("bin").join(name)
}

/// Paths of the binaries the units run, for the install-time check.
pub(crate) fn binaries(spec: &InstallSpec) -> Vec<PathBuf> {
    vec![bin(spec, "banger-helper"), bin(spec, "bangerd")]
}

/// `banger-helper.service`.
pub fn helper_unit(spec: &InstallSpec) -> String {
    let helper = bin(spec, "banger-helper");
    let helper = helper.display();
    let uid = spec.owner.uid;
    let socket = spec.helper_socket.display();
    let owner = &spec.owner.name;
    let bridge = &spec.bridge;
    let domain = &spec.domain;
    format!(
        "\
# Written by `banger system install`; removed by `banger system uninstall`.
[Unit]
Description=banger root helper (bridge, taps, nftables, DNS port) for uid {uid}
# Read back by `banger system status|restart|uninstall` (systemd ignores
# X- keys).
X-BangerOwnerName={owner}
X-BangerOwnerUid={uid}
X-BangerBridge={bridge}
X-BangerDomain={domain}
# The bridge, taps and rules live in the host's network namespace; order
# after its basic setup so the helper's first netlink calls see it.
After=network.target

[Service]
Type=exec
# The only root process of banger: it serves typed operations on its socket
# to uid {uid} (and root) only, checked with SO_PEERCRED.
# Its policy (bridge, guest network, publishable ports) is root's file, not
# anything a request says; its state lets a restarted helper keep the
# guests' bindings and held ports.
ExecStart={helper} --owner {uid} --socket {socket} --config /{HELPER_CONFIG} --state {HELPER_STATE}
Restart=on-failure
RestartSec=1s
# /run/{HELPER_RUNTIME_DIR}, created before start and removed after stop: the
# socket's home. 0755 so the owner's daemon can reach the socket; who may
# talk is decided by SO_PEERCRED, not by file modes.
RuntimeDirectory={HELPER_RUNTIME_DIR}
RuntimeDirectoryMode=0755
# The state file there outlives a restart (not a stop).
RuntimeDirectoryPreserve=restart

# --- Sandbox: the helper keeps root's uid but only these capabilities.
# CAP_NET_ADMIN: links, addresses, bridge ports (netlink), nftables, and
# TUNSETIFF/TUNSETOWNER on /dev/net/tun. CAP_NET_BIND_SERVICE: port 53 on
# the bridge address, bound here and handed to the daemon.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE
# Root already has every capability the bounding set allows; the ambient set
# makes the same list explicit, and keeps it if the unit ever gains User=.
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# The whole file system read-only, /home and /root invisible, a private /tmp:
# the helper writes no file except its socket (RuntimeDirectory is writable).
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
# Devices: only the tun clone device, to create taps.
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
# ProtectKernelTunables= stays off on purpose: the helper writes
# /proc/sys/net/ipv4/ip_forward and the bridge's route_localnet.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# Unix for its socket, netlink for rtnetlink and nftables, inet for the DNS
# sockets it binds.
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
PrivateMounts=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# IPAddressDeny= is absent on purpose: its filter follows the sockets made
# here, and the DNS sockets handed to the daemon must carry guests' queries.

[Install]
WantedBy=multi-user.target
"
    )
}

/// `bangerd@.service`, the template of the owner's daemon.
pub fn daemon_template(spec: &InstallSpec) -> String {
    let bangerd = bin(spec, "bangerd");
    let bangerd = bangerd.display();
    let socket = spec.helper_socket.display();
    let rundir = daemon_runtime_dir(spec.owner.uid);
    let rundir = rundir
        .strip_prefix("/run")
        .expect("the system runtime dir is under /run")
        .display();
    format!(
        "\
# Written by `banger system install`; removed by `banger system uninstall`.
# Instantiated with the owner's user name: bangerd@<user>.service.
[Unit]
Description=banger daemon for %i
# The daemon asks the helper for taps and rules; start it too, and first.
Wants={HELPER_UNIT}
After={HELPER_UNIT} network.target
# Logins wait for the daemon's runtime directory: a CLI run before it
# exists would start a second daemon of its own under XDG_RUNTIME_DIR.
Before=systemd-user-sessions.service

[Service]
Type=exec
User=%i
ExecStart={bangerd}
Environment=BANGER_HELPER_SOCKET={socket}
# The daemon's socket and each VM's sockets live in its runtime directory.
# /run/user/<uid> exists only during a login session (logind mounts it), so
# the unit gives the daemon a directory of its own, /run/{rundir}, owned by
# the owner and private to it. It is named by uid, not by %i, because the
# banger CLI looks for exactly this directory (whatever XDG_RUNTIME_DIR it
# has) to find this daemon; this template serves the one owner the helper
# serves.
RuntimeDirectory={rundir}
RuntimeDirectoryMode=0700
Environment=XDG_RUNTIME_DIR=/run/{rundir}
# Running VMs keep their QMP, agent and API sockets there: a restart of the
# daemon must not delete them, or the next daemon could not re-adopt the VMs.
RuntimeDirectoryPreserve=yes
# VMMs run detached but stay in this unit's cgroup. The default
# (control-group) would kill every VM on each daemon stop or restart;
# `process` stops only bangerd, and the next daemon re-adopts the VMs.
KillMode=process
Restart=on-failure
RestartSec=1s

# --- Light sandbox: the VMMs the daemon spawns inherit it, so nothing here
# may get in their way (/dev/kvm, taps passed as fds, files under the home).
# MemoryDenyWriteExecute= is absent on purpose: QEMU's TCG JIT needs
# writable+executable memory; ProtectKernelModules= too, as it hides
# /usr/lib/modules, where a kernel import may read a host kernel's modules.
# ProtectClock= is absent too: it adds a DeviceAllow= entry, which would
# turn the device policy into an allow list without /dev/kvm or /dev/net/tun.
NoNewPrivileges=yes
# The daemon and its VMMs run as %i and need no capability at all.
CapabilityBoundingSet=
ProtectSystem=full
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
# Unix: its API, QMP, Firecracker and agent sockets; inet: published ports
# and DNS; netlink: libc's address lookups; vsock: the agent under KVM.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_VSOCK
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"
    )
}

/// `banger-split-dns.service`: tells systemd-resolved that names under
/// `~<domain>` are answered by the bridge address.
///
/// resolved's per-link DNS settings live as long as the link does; the
/// bridge is created by the helper when the daemon first asks, and again
/// after each reboot. So the registration is tied to the bridge's device
/// unit: enabled with `WantedBy=` it runs each time the bridge appears
/// (reboots included), and `BindsTo=` stops it, reverting the link, when the
/// bridge goes. A systemd-networkd `.network` file would also survive
/// reboots, but only on hosts running networkd, and networkd would then
/// manage a link the helper owns.
pub fn split_dns_unit(spec: &InstallSpec) -> String {
    let device = bridge_device_unit(&spec.bridge);
    let resolvectl = spec.resolvectl.display();
    let bridge = &spec.bridge;
    let addr = spec.bridge_addr;
    let domain = &spec.domain;
    format!(
        "\
# Written by `banger system install`; removed by `banger system uninstall`.
[Unit]
Description=banger split DNS: ~{domain} answered on {bridge} ({addr})
BindsTo={device}
After={device} systemd-resolved.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={resolvectl} dns {bridge} {addr}
# `~` makes it a routing-only domain: queries for *.{domain} go to {addr}
# and no search suffix is added to other names.
ExecStart={resolvectl} domain {bridge} ~{domain}
# Never send names outside ~{domain} to the bridge: the daemon forwards them
# to the host's resolver, which is resolved itself: a loop.
ExecStart={resolvectl} default-route {bridge} false
ExecStopPost=-{resolvectl} revert {bridge}

[Install]
WantedBy={device}
"
    )
}

/// The line to add where systemd-resolved does not run, for the resolver
/// most such hosts use (dnsmasq, as in NetworkManager's dns=dnsmasq).
pub fn manual_split_dns_hint(spec: &InstallSpec) -> String {
    format!(
        "systemd-resolved is not running; to resolve *.{domain} on this host, add `server=/{domain}/{addr}` to your dnsmasq configuration (or point your resolver's {domain} zone at {addr})",
        domain = spec.domain,
        addr = spec.bridge_addr
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit and the daemon must agree on where the helper listens,
    /// or a daemon started without BANGER_HELPER_SOCKET misses it.
    #[test]
    fn the_daemon_runs_in_the_directory_the_cli_looks_for() {
        let spec = InstallSpec::new(
            crate::Owner {
                uid: 1000,
                name: "alice".into(),
            },
            "/opt/banger",
        );
        let unit = daemon_template(&spec);
        assert!(unit.contains("\nRuntimeDirectory=bangerd-1000\n"), "{unit}");
        assert!(
            unit.contains("\nEnvironment=XDG_RUNTIME_DIR=/run/bangerd-1000\n"),
            "{unit}"
        );
    }

    #[test]
    fn helper_socket_default_is_the_helpers() {
        assert_eq!(DEFAULT_HELPER_SOCKET, banger_helper::DEFAULT_SOCKET);
    }

    #[test]
    fn escapes_like_systemd_escape() {
        assert_eq!(
            bridge_device_unit("banger0"),
            "sys-subsystem-net-devices-banger0.device"
        );
        assert_eq!(
            escape_path("/sys/subsystem/net/devices/ban-ger0"),
            "sys-subsystem-net-devices-ban\\x2dger0"
        );
        assert_eq!(escape_path("/.x/a b"), "\\x2ex-a\\x20b");
    }
}
