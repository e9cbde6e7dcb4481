//! The daemon's side of host networking: which [`HostNetwork`] it uses
//! (picked once at start), the bridge, forwarding and nft table it ensures
//! then, the `<name>.vm` DNS server on the bridge address, and the per-VM
//! resources (tap, DNS record) that [`crate::resources`] acquires and
//! releases around each VM's run.
//!
//! The privileged work is banger-helper's ([`AnyHostNetwork`]): in
//! process when the daemon runs as root, over the helper socket otherwise.
//! When neither is possible (a rootless install without a helper), or
//! `network.mode = "none"`, networking is *off*: VMs boot without a NIC and
//! [`NetworkService::state`] says why, for `vm show` and `doctor`.
//!
//! Every host resource is named from the VM id (the tap by
//! [`TapName::for_vm`], the MAC by [`mac_for`]), so a restarted daemon
//! finds a crashed one's leftovers by listing taps ([`NetworkService::sweep`]).
//!
//! The network itself (bridge, address, publishable ports) is the host
//! network's configuration: the helper's, set by root, which must agree
//! with `[network]` here. A VM's tap is created bound to its address and
//! MAC, with its egress policy and its published ports, in one request;
//! the host network holds those ports and keeps the nft tables (see
//! [`banger_helper::InProcess`]). Re-adopting a running VM asks again with
//! the same binding, which changes nothing. Allow lists that name DNS
//! names are followed by the DNS server's answer hook ([`Follower`]).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{VmNetwork, VmRecord};
use banger_config::config::{NetworkConfig, NetworkMode};
use banger_dns::{DnsRecords, DnsServer, ServeOptions};
use banger_helper::{
    AnyHostNetwork, GuestSpec, HelperClient, HostNetwork, HostStatus, InProcess, Policy, PolicyFile,
};
use banger_net::{HostPort, MacAddr, TapName};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::egress::Follower;
use crate::error::{CoreError, CoreResult, chain, internal};
use crate::ports::{self, PublishedTable};

/// Env var naming the helper socket; wins over the default, not over the config.
pub const HELPER_SOCKET_ENV: &str = "BANGER_HELPER_SOCKET";

/// A VM's NIC while it runs: the host tap and the guest MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub tap: String,
    pub mac: String,
}

/// What the daemon's networking is, for `vm show`, `doctor` and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NetworkState {
    /// VMs get a NIC on `bridge`; `via` is `in-process` or the helper socket.
    Active {
        bridge: String,
        cidr: String,
        via: String,
        /// Why the DNS server is not running, if it is not.
        dns_error: Option<String>,
    },
    /// VMs boot without a NIC, for this reason.
    Off { reason: String },
}

/// The stable, locally administered unicast MAC of a VM: `02:` and the
/// first ten hex characters of its id. Never changes over the VM's life,
/// so a guest's DHCP lease or ARP entry stays right across restarts.
pub fn mac_for(vm_id: &str) -> String {
    let hex: Vec<&str> = (0..5)
        .map(|i| vm_id.get(2 * i..2 * i + 2).unwrap_or("00"))
        .collect();
    format!("02:{}", hex.join(":")).to_ascii_lowercase()
}

struct Active {
    host: Arc<AnyHostNetwork>,
    via: String,
    bridge: String,
    cidr: Ipv4Net,
    records: DnsRecords,
    /// The running VMs' published ports, for conflict messages.
    published: Mutex<PublishedTable>,
    /// The allow lists that follow DNS names, for the DNS server.
    follower: Arc<Follower>,
    /// Kept alive for the daemon's life: dropping it stops serving.
    _dns: Option<DnsServer>,
    dns_error: Option<String>,
}

/// The daemon's host networking, on or off.
pub struct NetworkService {
    mode: NetworkMode,
    active: Option<Active>,
    off_reason: String,
}

impl std::fmt::Debug for NetworkService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkService")
            .field("state", &self.state())
            .finish()
    }
}

impl NetworkService {
    /// Networking off for `reason` (tests of the rest, `mode = "none"`).
    pub fn off(mode: NetworkMode, reason: impl Into<String>) -> Self {
        NetworkService {
            mode,
            active: None,
            off_reason: reason.into(),
        }
    }

    /// Pick the host network, then ensure bridge, forwarding, the nft
    /// tables and the DNS server. Never fails: whatever goes wrong turns
    /// networking off with the reason. `vms` are the recorded VMs, whose
    /// addresses must lie in the configured network. `state` is where an
    /// in-process host network keeps its state across daemon restarts.
    pub async fn start(config: &NetworkConfig, vms: &[VmRecord], state: &Path) -> Self {
        if config.mode == NetworkMode::None {
            return Self::off(config.mode, "network.mode is \"none\"");
        }
        if let Some(reason) = cidr_conflict(config.bridge_cidr, vms) {
            return Self::off(config.mode, reason);
        }
        let (host, via) = match pick_host(config, state).await {
            Ok(h) => h,
            Err(reason) => return Self::off(config.mode, reason),
        };
        match Self::bring_up(config, host, via).await {
            Ok(active) => NetworkService {
                mode: config.mode,
                active: Some(active),
                off_reason: String::new(),
            },
            Err(reason) => Self::off(config.mode, reason),
        }
    }

    async fn bring_up(
        config: &NetworkConfig,
        host: AnyHostNetwork,
        via: String,
    ) -> Result<Active, String> {
        let bridge = config.bridge.clone();
        let cidr = config.bridge_cidr;
        host.ensure_network()
            .await
            .map_err(|e| format!("cannot set up bridge {bridge}: {}", chain(&e)))?;
        let host = Arc::new(host);
        let follower = Arc::new(Follower::new(host.clone()));
        let records = DnsRecords::new(&config.domain)
            .map_err(|e| format!("network.domain: {}", chain(&e)))?;
        let (dns, dns_error) = match start_dns(&host, config, &records, &follower).await {
            Ok(s) => (Some(s), None),
            Err(e) => {
                tracing::warn!(error = %e, "DNS server not running");
                (None, Some(e))
            }
        };
        Ok(Active {
            host,
            via,
            bridge,
            cidr,
            records,
            published: Mutex::new(PublishedTable::default()),
            follower,
            _dns: dns,
            dns_error,
        })
    }

    pub fn state(&self) -> NetworkState {
        match &self.active {
            Some(a) => NetworkState::Active {
                bridge: a.bridge.clone(),
                cidr: a.cidr.to_string(),
                via: a.via.clone(),
                dns_error: a.dns_error.clone(),
            },
            None => NetworkState::Off {
                reason: self.off_reason.clone(),
            },
        }
    }

    /// One line for the log and `vm start`.
    pub fn describe(&self) -> String {
        match self.state() {
            NetworkState::Active {
                bridge, cidr, via, ..
            } => format!("bridge {bridge} ({cidr}) via {via}"),
            NetworkState::Off { reason } => format!("off: {reason}; VMs boot without a NIC"),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The bridge's network, when networking is on.
    pub fn cidr(&self) -> Option<Ipv4Net> {
        self.active.as_ref().map(|a| a.cidr)
    }

    /// What the host network says of itself now (tables, forwarding), for
    /// `doctor`; `None` when networking is off.
    pub async fn host_status(&self) -> Option<Result<HostStatus, String>> {
        let a = self.active.as_ref()?;
        Some(a.host.status().await.map_err(|e| chain(&e)))
    }

    /// Why `vm` has no NIC, or would have none at its next start; `None`
    /// when it has (or will have) one. For `vm show` and `vm ls`.
    pub fn no_network_reason(&self, vm: &VmRecord) -> Option<String> {
        if vm.network == VmNetwork::None {
            return Some("created with --network none".into());
        }
        if self.active.is_none() {
            return Some(format!("host networking is off: {}", self.off_reason));
        }
        None
    }

    /// The VM's NIC before its VMM is spawned: its tap (created, up, on the
    /// bridge, bound to its address and MAC, with its egress and its
    /// published ports), and its DNS record. `None` when the VM has no
    /// network, or networking is off and nothing requires it. On error
    /// nothing is left behind: no tap, no record, no rule, no held port.
    pub async fn acquire(&self, vm: &VmRecord) -> CoreResult<Option<Nic>> {
        if vm.network == VmNetwork::None {
            return Ok(None);
        }
        let Some(a) = &self.active else {
            let why = if !vm.ports.is_empty() {
                Some(format!("vm {} publishes ports", vm.name))
            } else if !vm.egress.is_all() {
                Some(format!("vm {} has an egress policy", vm.name))
            } else if vm.network == VmNetwork::Bridge {
                Some(format!("vm {} was created with --network bridge", vm.name))
            } else if self.mode == NetworkMode::Bridge {
                Some("network.mode is \"bridge\"".to_string())
            } else {
                None
            };
            return match why {
                Some(why) => Err(CoreError::conflict(format!(
                    "{why} but host networking is unavailable: {}",
                    self.off_reason
                ))),
                None => Ok(None),
            };
        };
        let (spec, ip) = a.spec_for(vm)?;
        if !spec.ports.is_empty()
            && let Some(other) = a.published.lock().await.taken_by(&vm.id, &spec.ports)
        {
            return Err(CoreError::conflict(format!(
                "a port of vm {} is published by the running vm with id {other}",
                vm.name
            )));
        }
        let tap = a
            .host
            .create_tap(&spec)
            .await
            .map_err(|e| net_err(&format!("create the tap of {}", vm.name), &e))?;
        if let Err(e) = a.records.upsert(&vm.name, ip) {
            let _ = a.host.delete_tap(&tap).await;
            return Err(net_err(&format!("add the DNS record of {}", vm.name), &e));
        }
        a.published.lock().await.insert(&vm.id, spec.ports.clone());
        a.follower.insert(ip, tap.clone(), &spec.egress);
        Ok(Some(Nic {
            tap: tap.to_string(),
            mac: mac_for(&vm.id),
        }))
    }

    /// The NIC `vm` has while it holds one (acquired, and not given back):
    /// its tap and MAC, named from its id. None without host networking or
    /// for a VM created with `--network none`.
    pub fn nic_of(&self, vm: &VmRecord) -> Option<Nic> {
        if self.active.is_none() || vm.network == VmNetwork::None {
            return None;
        }
        let tap = TapName::for_vm(&vm.id).ok()?;
        Some(Nic {
            tap: tap.to_string(),
            mac: mac_for(&vm.id),
        })
    }

    /// An open queue of `nic`'s tap, for a VMM that takes its tap as a
    /// descriptor (QEMU `-netdev tap,fd=N`). Opening a tap needs
    /// /dev/net/tun, which is often root's only: asked of the helper, a
    /// daemon that is not root can still give its VMM a NIC.
    pub async fn open_tap(&self, nic: &Nic) -> CoreResult<std::os::fd::OwnedFd> {
        let Some(a) = &self.active else {
            return Err(crate::error::CoreError::conflict(format!(
                "tap {} cannot be opened: host networking is off",
                nic.tap
            )));
        };
        let tap =
            TapName::parse(&nic.tap).map_err(|e| crate::error::internal("open the tap", &e))?;
        a.host
            .open_tap(&tap)
            .await
            .map_err(|e| crate::error::internal(&format!("open tap {tap}"), &e))
    }

    /// Give back everything [`Self::acquire`] took for `vm`. Idempotent, and
    /// safe for a VM that never had a NIC.
    pub async fn release(&self, vm: &VmRecord) {
        let Some(a) = &self.active else { return };
        let _ = a.records.remove(&vm.name);
        a.published.lock().await.remove(&vm.id);
        if let Ok(ip) = vm.guest_ip.parse() {
            a.follower.remove(ip);
        }
        let Ok(tap) = TapName::for_vm(&vm.id) else {
            return;
        };
        if let Err(e) = a.host.delete_tap(&tap).await {
            tracing::warn!(vm = %vm.name, tap = %tap, error = %chain(&e), "cannot delete tap");
        }
    }

    /// A re-adopted running VM: its tap outlived the old daemon and is
    /// asked for again with the same binding (a no-op for a helper that
    /// kept it; a root daemon's fresh host network binds it anew). Its DNS
    /// record lived in the old daemon's memory and is put back.
    pub async fn adopt(&self, vm: &VmRecord) {
        let Some(a) = &self.active else { return };
        if vm.network == VmNetwork::None {
            return;
        }
        let Ok((spec, ip)) = a.spec_for(vm) else {
            return;
        };
        match a.host.create_tap(&spec).await {
            Ok(tap) => {
                a.published.lock().await.insert(&vm.id, spec.ports.clone());
                a.follower.insert(ip, tap, &spec.egress);
            }
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %chain(&e), "cannot re-bind the tap of a running vm");
            }
        }
        let _ = a.records.upsert(&vm.name, ip);
    }

    /// The published ports of the running VMs, for tests and `doctor`.
    pub async fn published(&self) -> Vec<HostPort> {
        match &self.active {
            Some(a) => a.published.lock().await.all(),
            None => Vec::new(),
        }
    }

    /// Delete every banger tap that belongs to none of `live` (the VMs
    /// whose VMM runs): leftovers of a daemon that died between creating a
    /// tap and recording the VM stopped. Returns what was removed.
    pub async fn sweep(&self, live: &HashSet<String>) -> Vec<String> {
        let Some(a) = &self.active else {
            return Vec::new();
        };
        let taps = match a.host.list_taps().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot list taps");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for tap in taps {
            if live.iter().any(|id| tap.belongs_to(id)) {
                continue;
            }
            if a.host.delete_tap(&tap).await.is_ok() {
                removed.push(tap.to_string());
            }
        }
        removed
    }

    /// The guest's DNS name, when networking (and its DNS server) is on.
    pub fn records(&self) -> Option<&DnsRecords> {
        self.active.as_ref().map(|a| &a.records)
    }
}

impl Active {
    /// What the host network is asked for `vm`, and its address.
    fn spec_for(&self, vm: &VmRecord) -> CoreResult<(GuestSpec, Ipv4Addr)> {
        let ip: Ipv4Addr = vm.guest_ip.parse().map_err(|_| {
            CoreError::conflict(format!(
                "vm {} has no valid address ({:?}); recreate it",
                vm.name, vm.guest_ip
            ))
        })?;
        if !self.cidr.contains(&ip) {
            return Err(CoreError::conflict(format!(
                "vm {} has address {ip}, outside network.bridge_cidr {}; restore bridge_cidr or recreate the vm",
                vm.name, self.cidr
            )));
        }
        let mac: MacAddr = mac_for(&vm.id)
            .parse()
            .map_err(|e| internal("the vm's MAC", &e))?;
        Ok((
            GuestSpec {
                vm_id: vm.id.clone(),
                ip,
                mac,
                egress: crate::egress::to_net(&vm.egress),
                ports: ports::host_ports(vm),
            },
            ip,
        ))
    }
}

fn net_err(context: &str, e: &(dyn std::error::Error + 'static)) -> CoreError {
    internal(context, e)
}

/// Refuse a `bridge_cidr` that no longer holds the recorded VMs' addresses:
/// they were allocated from the old network and would be unreachable.
fn cidr_conflict(cidr: Ipv4Net, vms: &[VmRecord]) -> Option<String> {
    let outside: Vec<&str> = vms
        .iter()
        .filter(|v| {
            v.guest_ip
                .parse::<Ipv4Addr>()
                .is_ok_and(|ip| !cidr.contains(&ip))
        })
        .map(|v| v.name.as_str())
        .collect();
    (!outside.is_empty()).then(|| {
        format!(
            "network.bridge_cidr is {cidr} but vm(s) {} have addresses outside it; changing bridge_cidr while VMs exist is refused: restore it or remove those VMs",
            outside.join(", ")
        )
    })
}

/// The helper socket: config, else `BANGER_HELPER_SOCKET`, else the default.
/// The flag says whether it was named explicitly.
fn helper_socket(config: &NetworkConfig) -> (PathBuf, bool) {
    if let Some(p) = &config.helper_socket {
        return (p.clone(), true);
    }
    match std::env::var_os(HELPER_SOCKET_ENV).filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(banger_helper::DEFAULT_SOCKET), false),
    }
}

/// A helper named explicitly wins; else in-process when root; else the
/// helper at the default socket; else none, with the reason. A helper
/// whose network is not the one `[network]` names is refused: VMs were
/// given addresses from the config's.
async fn pick_host(
    config: &NetworkConfig,
    state: &Path,
) -> Result<(AnyHostNetwork, String), String> {
    let (socket, explicit) = helper_socket(config);
    let euid = rustix::process::geteuid().as_raw();
    if explicit || euid != 0 {
        match HelperClient::connect(&socket).await {
            Ok((client, info)) => {
                if info.owner != euid && euid != 0 {
                    return Err(format!(
                        "banger-helper at {} serves uid {}, not this daemon's uid {euid}",
                        socket.display(),
                        info.owner
                    ));
                }
                if info.network.bridge != config.bridge || info.network.cidr != config.bridge_cidr {
                    return Err(format!(
                        "banger-helper at {} runs bridge {} ({}) but network.bridge/bridge_cidr say {} ({}); make them agree (sudo banger system install writes the helper's from this config)",
                        socket.display(),
                        info.network.bridge,
                        info.network.cidr,
                        config.bridge,
                        config.bridge_cidr
                    ));
                }
                return Ok((
                    AnyHostNetwork::Helper(client),
                    format!("banger-helper {} ({})", info.version, socket.display()),
                ));
            }
            Err(e) if explicit || euid != 0 => {
                return Err(format!(
                    "the daemon is not root and {}",
                    chain(&e).replacen("connect to", "cannot reach", 1)
                ));
            }
            Err(_) => {}
        }
    }
    // A root daemon is root's own decision: it may publish any port.
    let policy = Policy::new(&PolicyFile {
        bridge: config.bridge.clone(),
        bridge_cidr: config.bridge_cidr,
        publish_ports: "1-65535".into(),
        allow_low_ports: true,
    })
    .map_err(|e| chain(&e))?;
    let inproc = InProcess::start(policy, euid, Some(state.to_path_buf()))
        .await
        .map_err(|e| chain(&e))?;
    Ok((
        AnyHostNetwork::InProcess(inproc),
        "in-process (root)".into(),
    ))
}

/// The DNS server on the bridge address, port 53, on sockets bound by the
/// host network (only root may bind them).
async fn start_dns(
    host: &AnyHostNetwork,
    config: &NetworkConfig,
    records: &DnsRecords,
    follower: &Arc<Follower>,
) -> Result<DnsServer, String> {
    let upstreams = if config.dns_upstreams.is_empty() {
        banger_dns::host_upstreams().map_err(|e| chain(&e))?
    } else {
        config.dns_upstreams.clone()
    };
    let addr = config.bridge_cidr.addr();
    let socks = host
        .bind_dns()
        .await
        .map_err(|e| format!("bind DNS on {addr}:53: {}", chain(&e)))?;
    // No allow list by source address: the host asks its own bridge
    // address from whichever of its addresses the kernel picks (the
    // uplink's, typically), which a list made now would miss or get stale
    // on. Who may ask is decided by interface in the nft table instead:
    // the bridge (guests) and `lo` (the host itself), nothing else.
    let options = ServeOptions {
        upstreams,
        allowed_clients: Vec::new(),
        limits: banger_dns::Limits::default(),
        hook: Some(follower.clone() as Arc<dyn banger_dns::AnswerHook>),
    };
    DnsServer::from_std(socks.udp, Some(socks.tcp), records.clone(), &options)
        .map_err(|e| chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_and_locally_administered() {
        let m = mac_for("0123456789abcdef");
        assert_eq!(m, "02:01:23:45:67:89");
        assert_eq!(m, mac_for("0123456789ABCDEF"));
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "unicast, locally administered");
    }

    #[test]
    fn a_changed_cidr_names_the_vms_outside_it() {
        let mut vm: VmRecord = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "name": "web", "image_id": "i", "kernel_id": "k",
            "spec": {"vcpus": 1, "memory_mib": 256, "overlay_disk_bytes": 1, "work_disk_bytes": 1},
            "desired_state": "stopped", "guest_ip": "172.16.0.2", "vsock_cid": 3,
            "dir": "/d", "overlay_disk": "/o", "work_disk": "/w",
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        assert!(cidr_conflict("172.16.0.1/24".parse().unwrap(), &[vm.clone()]).is_none());
        let e = cidr_conflict("10.9.0.1/24".parse().unwrap(), &[vm.clone()]).unwrap();
        assert!(e.contains("web") && e.contains("refused"), "{e}");
        vm.guest_ip = "bogus".into();
        assert!(cidr_conflict("10.9.0.1/24".parse().unwrap(), &[vm]).is_none());
    }
}
