//! [`InProcess`]: the operations performed by this process, which needs
//! CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE for DNS and low ports) in its
//! network namespace. The helper serves its socket with one; a daemon
//! running as root holds one itself.
//!
//! It owns the desired state of the host network: each guest's binding
//! (see [`crate::state`]), the sockets holding published ports, and the
//! nft tables rendered from them. Every request about a guest is checked
//! against the [`Policy`] and against the other guests (one address, one
//! MAC, one host port per tap) before anything changes, and a failure
//! leaves the state as it was. A watch on nftables ([`banger_net::monitor`])
//! restores the tables when anyone else changes them.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use banger_net::monitor::{self, Change};
use banger_net::{
    Guest, HeldPort, HostPort, Netlink, Resolved, RuleSet, TableCheck, TapName, nft, sysctl,
};
use tokio::sync::{Mutex, mpsc};

use crate::host::{HostNetwork, Outcome};
use crate::proto::{HelperOp, PROTOCOL_VERSION, Reply, TableState};
use crate::state::Saved;
use crate::{HelperError, Policy};

/// How long a burst of foreign nftables changes (a flush, a restore of
/// another ruleset) may go on before the tables are checked: one repair
/// for the burst, well inside the 2 s banger promises.
const SETTLE: Duration = Duration::from_millis(100);
/// Most addresses one DNS answer may allow.
const MAX_ANSWERS: usize = 64;

/// The privileged operations, done here.
#[derive(Debug)]
pub struct InProcess {
    inner: Arc<Inner>,
    repair: tokio::task::JoinHandle<()>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.repair.abort();
    }
}

#[derive(Debug)]
struct Inner {
    nl: Netlink,
    policy: Policy,
    owner: u32,
    store: Option<PathBuf>,
    live: Mutex<Live>,
    repairs: AtomicU64,
}

#[derive(Debug, Default)]
struct Live {
    saved: Saved,
    held: HashMap<TapName, Vec<HeldPort>>,
}

impl InProcess {
    /// Act in the calling thread's network namespace for `owner` (taps
    /// are created owned by it). With `store`, the state is read from and
    /// written to that file, so a restarted helper keeps its guests, their
    /// ports and the tables; their taps are checked against the kernel.
    /// Must be called inside a tokio runtime.
    pub async fn start(
        policy: Policy,
        owner: u32,
        store: Option<PathBuf>,
    ) -> Result<Self, HelperError> {
        let saved = match &store {
            Some(p) => Saved::load(p)?,
            None => Saved::default(),
        };
        Self::start_from(policy, owner, saved, store).await
    }

    /// [`Self::start`] from a state read elsewhere (a stopped helper's,
    /// for `system uninstall`).
    pub async fn start_from(
        policy: Policy,
        owner: u32,
        mut saved: Saved,
        store: Option<PathBuf>,
    ) -> Result<Self, HelperError> {
        let nl = Netlink::connect()?;
        // The socket joins this thread's namespace now, before any await.
        let watch = monitor::watch();
        let taps: HashSet<TapName> = nl.list_taps().await?.into_iter().map(|t| t.name).collect();
        saved.guests.retain(|t, _| taps.contains(t));
        if saved.up && !nl.bridge_exists(&policy.net().bridge).await? {
            saved.up = false;
        }
        let mut held = HashMap::new();
        for g in saved.guests.values_mut() {
            let mut hold = Vec::new();
            g.ports.retain(|p| match HeldPort::hold(p) {
                Ok(h) => {
                    hold.push(h);
                    true
                }
                Err(e) => {
                    tracing::warn!(tap = %g.tap, port = %p, error = %e, "a published port is no longer free; dropped");
                    false
                }
            });
            held.insert(g.tap.clone(), hold);
        }
        let inner = Arc::new(Inner {
            nl,
            policy,
            owner,
            store,
            live: Mutex::new(Live { saved, held }),
            repairs: AtomicU64::new(0),
        });
        {
            let live = inner.live.lock().await;
            if live.saved.up
                && let Err(e) = nft::apply(&inner.rules(&live.saved)).await
            {
                tracing::warn!(error = %e, "cannot restore the nft tables at start");
            }
            inner.persist(&live.saved);
        }
        let repair = match watch {
            Ok((rx, _thread)) => tokio::spawn(repair_loop(Arc::downgrade(&inner), rx)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch nftables: changes to banger's tables will not be repaired");
                tokio::spawn(async {})
            }
        };
        Ok(InProcess { inner, repair })
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Times the tables were restored since start.
    pub fn repairs(&self) -> u64 {
        self.inner.repairs.load(Ordering::Relaxed)
    }
}

impl HostNetwork for InProcess {
    async fn call(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        self.inner.execute(op).await
    }
}

async fn repair_loop(inner: Weak<Inner>, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = changes.recv().await {
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        let Some(inner) = inner.upgrade() else { return };
        inner.repair(&first).await;
    }
}

impl Inner {
    fn rules(&self, saved: &Saved) -> RuleSet {
        RuleSet {
            net: self.policy.net().clone(),
            guests: saved.guests.values().cloned().collect(),
            forward_guard: saved.forward_was_off == Some(true),
        }
    }

    fn persist(&self, saved: &Saved) {
        if let Some(p) = &self.store
            && let Err(e) = saved.store(p)
        {
            tracing::warn!(error = %e, "cannot save the helper's state");
        }
    }

    async fn repair(&self, why: &Change) {
        let live = self.live.lock().await;
        if !live.saved.up {
            return;
        }
        let rules = self.rules(&live.saved);
        match nft::verify(&rules).await {
            Ok(TableCheck::Matches) => return,
            Ok(found) => {
                tracing::warn!(?why, %found, "banger's nft tables were changed by someone else; restoring them")
            }
            Err(e) => {
                tracing::warn!(?why, error = %e, "cannot read banger's nft tables; restoring them")
            }
        }
        match nft::apply(&rules).await {
            Ok(()) => {
                self.repairs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "cannot restore banger's nft tables"),
        }
    }

    async fn execute(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        let net = self.policy.net();
        Ok(match op {
            HelperOp::Version {} => Reply::Version {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").to_string(),
                owner: self.owner,
                network: net.clone(),
                publish_ports: self.policy.publish_ports(),
                allow_low_ports: self.policy.allow_low_ports(),
            }
            .into(),
            HelperOp::EnsureNetwork {} => {
                self.ensure_network().await?;
                Reply::Done.into()
            }
            HelperOp::RemoveNetwork {} => {
                self.remove_network().await?;
                Reply::Done.into()
            }
            HelperOp::CreateTap {
                vm_id,
                ip,
                mac,
                egress,
                ports,
            } => {
                let guest = Guest {
                    tap: TapName::for_vm(&vm_id)?,
                    ip,
                    mac,
                    egress,
                    ports,
                };
                let tap = guest.tap.clone();
                self.create_tap(guest).await?;
                Reply::Tap { tap }.into()
            }
            HelperOp::DeleteTap { tap } => {
                self.delete_tap(&tap).await?;
                Reply::Done.into()
            }
            HelperOp::OpenTap { tap } => {
                let fd = self.nl.open_tap(&tap).await?;
                Outcome {
                    reply: Reply::TapFd { tap },
                    fds: vec![fd],
                }
            }
            HelperOp::ListTaps {} => Reply::Taps {
                taps: self
                    .nl
                    .list_taps()
                    .await?
                    .into_iter()
                    .map(|t| t.name)
                    .collect(),
            }
            .into(),
            HelperOp::AllowResolved { tap, answers } => {
                self.allow_resolved(&tap, &answers).await?;
                Reply::Done.into()
            }
            HelperOp::BindDns {} => self.bind_dns().await?,
            HelperOp::Status {} => self.status().await?,
        })
    }

    async fn ensure_network(&self) -> Result<(), HelperError> {
        let net = self.policy.net();
        let mut live = self.live.lock().await;
        self.nl.check_cidr_free(net.cidr, &net.bridge).await?;
        self.nl.ensure_bridge(&net.bridge, net.cidr).await?;
        sysctl::disable_ipv6(&net.bridge)?;
        let was_on = sysctl::enable_ipv4_forwarding()?;
        if live.saved.forward_was_off.is_none() {
            live.saved.forward_was_off = Some(!was_on);
        }
        sysctl::enable_route_localnet(&net.bridge)?;
        nft::apply(&self.rules(&live.saved)).await?;
        live.saved.up = true;
        self.persist(&live.saved);
        Ok(())
    }

    async fn remove_network(&self) -> Result<(), HelperError> {
        let net = self.policy.net();
        let mut live = self.live.lock().await;
        let taps = self.nl.list_taps().await?;
        if !taps.is_empty() {
            let names: Vec<String> = taps.iter().map(|t| t.name.to_string()).collect();
            return Err(HelperError::Refused(format!(
                "banger taps still exist ({}): delete them first",
                names.join(", ")
            )));
        }
        live.saved.up = false;
        live.saved.guests.clear();
        live.held.clear();
        nft::remove().await?;
        self.nl.remove_bridge(&net.bridge).await?;
        if live.saved.forward_was_off == Some(true) {
            sysctl::disable_ipv4_forwarding()?;
        }
        live.saved.forward_was_off = None;
        self.persist(&live.saved);
        Ok(())
    }

    /// Refuse a guest that collides with another: the same address, MAC
    /// or host port.
    fn check_others(&self, live: &Live, guest: &Guest) -> Result<(), HelperError> {
        for other in live.saved.guests.values().filter(|o| o.tap != guest.tap) {
            if other.ip == guest.ip {
                return Err(HelperError::Refused(format!(
                    "{} is bound to tap {} already",
                    guest.ip, other.tap
                )));
            }
            if other.mac == guest.mac {
                return Err(HelperError::Refused(format!(
                    "{} is the MAC of tap {} already",
                    guest.mac, other.tap
                )));
            }
            if let Some(p) = guest
                .ports
                .iter()
                .find(|p| other.ports.iter().any(|q| q.overlaps(p)))
            {
                return Err(HelperError::Refused(format!(
                    "host port {}/{} is published by tap {} already",
                    p.host_port,
                    p.proto.as_str(),
                    other.tap
                )));
            }
        }
        Ok(())
    }

    async fn create_tap(&self, guest: Guest) -> Result<(), HelperError> {
        let net = self.policy.net();
        self.policy.check_guest(guest.ip, guest.mac)?;
        self.policy.check_ports(&guest.ports)?;
        self.policy.check_egress(&guest.egress)?;
        let mut live = self.live.lock().await;
        if !live.saved.up {
            return Err(HelperError::Refused(
                "the network is not up: ensure_network first".into(),
            ));
        }
        self.check_others(&live, &guest)?;
        let old = live.saved.guests.get(&guest.tap).cloned();
        // Hold the new ports first: a port another process holds refuses
        // the whole request before anything changed.
        let kept: Vec<HostPort> = old.as_ref().map(|o| o.ports.clone()).unwrap_or_default();
        let mut fresh = Vec::new();
        for p in guest.ports.iter().filter(|p| !kept.contains(p)) {
            fresh.push(HeldPort::hold(p)?);
        }
        let existed = self
            .nl
            .list_taps()
            .await?
            .iter()
            .any(|t| t.name == guest.tap);
        self.nl
            .create_tap(&guest.tap, self.owner, &net.bridge)
            .await?;
        let rules = async {
            sysctl::disable_ipv6(guest.tap.as_str())?;
            match &old {
                Some(o) if *o == guest => Ok(()),
                Some(o) => nft::replace(o, &guest).await,
                None => nft::attach(&guest).await,
            }
        };
        if let Err(e) = rules.await {
            // The incremental change failed (an element gone under us):
            // write the whole state as it should be.
            let mut want = live.saved.clone();
            want.guests.insert(guest.tap.clone(), guest.clone());
            if let Err(full) = nft::apply(&self.rules(&want)).await {
                if !existed {
                    let _ = self.nl.delete_tap(&guest.tap).await;
                }
                tracing::warn!(error = %e, "incremental nft change failed");
                return Err(full.into());
            }
        }
        let held = live.held.entry(guest.tap.clone()).or_default();
        held.retain(|h| guest.ports.contains(h.port()));
        held.extend(fresh);
        live.saved.guests.insert(guest.tap.clone(), guest);
        self.persist(&live.saved);
        Ok(())
    }

    async fn delete_tap(&self, tap: &TapName) -> Result<(), HelperError> {
        let mut live = self.live.lock().await;
        self.nl.delete_tap(tap).await?;
        if let Some(g) = live.saved.guests.remove(tap) {
            if live.saved.up
                && let Err(e) = nft::detach(&g).await
            {
                tracing::warn!(error = %e, "incremental nft change failed; writing the whole tables");
                nft::apply(&self.rules(&live.saved)).await?;
            }
            live.held.remove(tap);
            self.persist(&live.saved);
        }
        Ok(())
    }

    async fn allow_resolved(&self, tap: &TapName, answers: &[Resolved]) -> Result<(), HelperError> {
        if answers.len() > MAX_ANSWERS {
            return Err(HelperError::Refused(format!(
                "at most {MAX_ANSWERS} addresses per answer"
            )));
        }
        let live = self.live.lock().await;
        let guest = live
            .saved
            .guests
            .get(tap)
            .ok_or_else(|| HelperError::Refused(format!("{tap} is not a bound tap")))?;
        nft::allow_resolved(guest, answers).await?;
        Ok(())
    }

    /// Port 53 on the bridge address, and only there: the helper must not
    /// become a way to grab port 53 anywhere else.
    async fn bind_dns(&self) -> Result<Outcome, HelperError> {
        let net = self.policy.net();
        let on_bridge = self
            .nl
            .ipv4_addresses(&net.bridge)
            .await?
            .iter()
            .any(|n| n.addr() == net.gateway());
        if !on_bridge {
            return Err(HelperError::Refused(format!(
                "{} does not carry {} yet: ensure_network first",
                net.bridge,
                net.gateway()
            )));
        }
        let addr = SocketAddrV4::new(net.gateway(), 53);
        let io = |op| move |source| HelperError::Io { op, source };
        let udp = UdpSocket::bind(addr).map_err(io("bind DNS udp for"))?;
        let tcp = TcpListener::bind(addr).map_err(io("bind DNS tcp for"))?;
        Ok(Outcome {
            reply: Reply::DnsSockets { addr },
            fds: vec![OwnedFd::from(udp), OwnedFd::from(tcp)],
        })
    }

    async fn status(&self) -> Result<Outcome, HelperError> {
        let net = self.policy.net();
        let live = self.live.lock().await;
        let tables = if live.saved.up {
            match nft::verify(&self.rules(&live.saved)).await? {
                TableCheck::Matches => TableState::Matches,
                TableCheck::Missing => TableState::Missing,
                TableCheck::Differs(detail) => TableState::Differs { detail },
            }
        } else if nft::tables_present().await? {
            TableState::Differs {
                detail: "banger's tables exist but the network is not up".into(),
            }
        } else {
            TableState::NotWanted
        };
        Ok(Reply::Status {
            bridge: self.nl.bridge_exists(&net.bridge).await?,
            tables,
            forwarding: sysctl::ipv4_forwarding_enabled(),
            guests: live.saved.guests.len(),
            repairs: self.repairs.load(Ordering::Relaxed),
        }
        .into())
    }
}
