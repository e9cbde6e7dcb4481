//! Idle VMs cost nothing: a running VM that nobody uses for its idle
//! period (`--idle-suspend`, or the daemon's `vm.idle_suspend`) is
//! suspended (`boot/suspend.rs`: saved to its directory, its VMM ended),
//! and any use wakes it.
//!
//! In use means: a stream open on the daemon's agent connection (an exec
//! or shell, a copy, a tcp stream of `vm forward` or `vm ssh`'s proxy), a
//! command that reached the agent since the last look
//! ([`Services::touch`]), or bytes the guest sent on its tap (it answers
//! ssh over the bridge, a request to a published port, a ping; its own
//! traffic counts too, the bridge's multicast chatter does not). The monitor
//! looks once a second; a VM paused by the user or in the middle of an
//! operation (its lock held) is left alone.
//!
//! What wakes a suspended VM:
//! - a banger command that needs its guest ([`Services::awake_vm`],
//!   [`Services::agent_of`]);
//! - a frame for it on its tap. While it sleeps the daemon holds a queue
//!   of its tap open (the helper's `OpenTap`) with a filter that keeps only
//!   frames for the VM (`banger_net::wake`), and waits for it to become
//!   readable; the woken VMM gets that same queue and reads the frames that
//!   waited, so the first connection is answered, not refused;
//! - a DNS query for `<name>.vm` (`DnsRecords::set_asleep`), so a client
//!   that looks the name up finds the VM waking before it connects.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use banger_api::{VmRecord, VmState};

use crate::Services;
use crate::boot::Woken;
use crate::error::CoreResult;

/// How often the monitor looks at the running VMs.
const TICK: Duration = Duration::from_secs(1);

/// The state of idle suspend in a daemon: the suspended VMs' tap watches
/// and when each running VM was last seen in use.
#[derive(Debug, Default)]
pub struct Idle {
    watchers: Mutex<HashMap<String, Watcher>>,
    seen: Mutex<HashMap<String, Seen>>,
    /// The daemon's services, for the tasks a watch spawns (set by
    /// [`Services::start_idle`]; no watch exists before).
    services: std::sync::OnceLock<std::sync::Weak<Services>>,
}

/// A suspended VM's tap queue and the task waiting for it to be readable.
#[derive(Debug)]
struct Watcher {
    fd: OwnedFd,
    task: tokio::task::JoinHandle<()>,
}

/// The last look at a running VM.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When it was last in use.
    at: Instant,
    /// Streams opened on its agent connection so far.
    opened: u32,
    /// Bytes it sent through its tap so far.
    net: u64,
}

/// A descriptor number the watcher polls; the [`Watcher`] owns it.
struct Polled(RawFd);

impl AsRawFd for Polled {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Services {
    /// Starts idle suspend (once, after reconcile): a watch on every
    /// suspended VM, the DNS wake listener and the monitor.
    pub async fn start_idle(self: &Arc<Self>) {
        let _ = self.idle.services.set(Arc::downgrade(self));
        for vm in tokio::task::block_in_place(|| self.vms.list()).unwrap_or_default() {
            if tokio::task::block_in_place(|| self.boot.is_suspended(&vm)) {
                self.watch(&vm).await;
            }
        }
        if let Some(records) = self.resources.network().records() {
            let mut names = records.wake_requests();
            let this = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(name) = names.recv().await {
                    let this = Arc::clone(&this);
                    tokio::spawn(
                        async move { this.wake_in_background(&name, "a DNS query").await },
                    );
                }
            });
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.idle_tick().await;
                this.boot.sweep_template_ram();
            }
        });
    }

    /// The VM with id `id` is in use now (a command reached its guest).
    pub(crate) fn touch(&self, id: &str) {
        if let Some(s) = lock(&self.idle.seen).get_mut(id) {
            s.at = Instant::now();
        }
    }

    /// One look at every running VM with an idle period: suspends those
    /// unused for that long.
    async fn idle_tick(self: &Arc<Self>) {
        let default = self.config.vm.idle_suspend_secs();
        let Ok(vms) = tokio::task::block_in_place(|| self.vms.list()) else {
            return;
        };
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut seen = lock(&self.idle.seen);
            seen.retain(|id, _| vms.iter().any(|v| &v.id == id));
            for vm in &vms {
                let period = vm.idle_suspend_secs.unwrap_or(default);
                let live = (period > 0 && vm.desired_state == VmState::Running)
                    .then(|| self.boot.live_handles(vm))
                    .flatten();
                let Some(h) = live else {
                    seen.remove(&vm.id);
                    continue;
                };
                let (open, opened) = self.boot.agent_activity(vm).unwrap_or((0, 0));
                let net = crate::guest::tap_bytes(&vm.id).unwrap_or(0);
                let s = seen.entry(vm.id.clone()).or_insert(Seen {
                    at: now,
                    opened,
                    net,
                });
                if h.paused || h.saving || open > 0 || opened != s.opened || net != s.net {
                    *s = Seen {
                        at: now,
                        opened,
                        net,
                    };
                } else if now.duration_since(s.at) >= Duration::from_secs(period) {
                    due.push(vm.id.clone());
                }
            }
        }
        for id in due {
            self.suspend_if_idle(&id).await;
        }
    }

    /// Suspends the VM with id `id` unless an operation holds its lock
    /// (then it is in use).
    async fn suspend_if_idle(self: &Arc<Self>, id: &str) {
        let Ok(_guard) = self.vms.vm_lock(id).try_lock_owned() else {
            return;
        };
        let Ok(Some(vm)) = self.store.get_vm(id) else {
            return;
        };
        let t = Instant::now();
        match self.suspend_locked(&vm).await {
            Ok(()) => {
                tracing::info!(vm = %vm.name, ms = t.elapsed().as_millis(), "suspended an idle vm")
            }
            Err(e) => tracing::warn!(vm = %vm.name, error = %e, "could not suspend an idle vm"),
        }
        lock(&self.idle.seen).remove(id);
    }

    /// `vm suspend`: suspends a running VM now.
    pub async fn suspend_vm(self: &Arc<Self>, reference: &str) -> CoreResult<VmRecord> {
        let (mut vm, _guard) = self.locked_vm(reference).await?;
        if !tokio::task::block_in_place(|| self.boot.is_suspended(&vm)) {
            self.suspend_locked(&vm).await?;
        }
        vm.suspended = true;
        Ok(vm)
    }

    /// Suspends `vm` and watches its tap. Caller holds the lock.
    async fn suspend_locked(self: &Arc<Self>, vm: &VmRecord) -> CoreResult<()> {
        self.boot.suspend(vm).await?;
        self.watch(vm).await;
        Ok(())
    }

    /// `vm`, awake: woken first if it is suspended, with its lock held.
    pub(crate) async fn awake_vm(
        &self,
        reference: &str,
    ) -> CoreResult<(VmRecord, tokio::sync::OwnedMutexGuard<()>)> {
        let (vm, guard) = self.locked_vm(reference).await?;
        self.wake_locked(&vm).await?;
        Ok((vm, guard))
    }

    /// Wakes `vm` if it is suspended (then says how long it took).
    /// Caller holds the lock.
    pub(crate) async fn wake_locked(&self, vm: &VmRecord) -> CoreResult<Option<Woken>> {
        if !tokio::task::block_in_place(|| self.boot.is_suspended(vm)) {
            return Ok(None);
        }
        let image = self.images.get(&vm.image_id)?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
        let mut fd = self.unwatch(vm).await;
        if fd.is_none()
            && self.boot.takes_tap_fd()
            && let Some(nic) = self.resources.network().nic_of(vm)
        {
            fd = Some(self.resources.network().open_tap(&nic).await?);
        }
        // What waited in the tap is handed to the woken guest after it
        // runs (see `banger_net::wake::drain`).
        let waiting = match &fd {
            Some(fd) => banger_net::wake::drain(fd.as_fd()).unwrap_or_else(|e| {
                tracing::warn!(vm = %vm.name, error = %e, "could not read the frames that waited");
                (Vec::new(), 0)
            }),
            None => (Vec::new(), 0),
        };
        tracing::debug!(vm = %vm.name, frames = waiting.0.len(), header = waiting.1, "frames waited");
        let woken = self
            .boot
            .wake(
                vm,
                &image,
                &kernel,
                fd.as_ref().map(AsRawFd::as_raw_fd),
                waiting,
            )
            .await;
        match woken {
            Ok(w) => {
                tracing::info!(
                    vm = %vm.name,
                    restore_ms = w.restore.as_millis(),
                    ready_ms = w.ready.as_millis(),
                    replayed_frames = w.replayed,
                    "woke a suspended vm"
                );
                self.touch(&vm.id);
                Ok(Some(w))
            }
            Err(e) => {
                if tokio::task::block_in_place(|| self.boot.is_suspended(vm)) {
                    match fd {
                        Some(fd) => self.watch_fd(vm, fd),
                        None => self.mark_asleep(vm, true),
                    }
                }
                Err(e)
            }
        }
    }

    /// Wakes a VM for something other than a command (a frame on its
    /// tap, a DNS query), logging what failed.
    async fn wake_in_background(&self, reference: &str, why: &str) {
        match self.locked_vm(reference).await {
            Ok((vm, _guard)) => {
                if let Err(e) = self.wake_locked(&vm).await {
                    tracing::warn!(vm = %vm.name, error = %e, "could not wake the vm for {why}");
                }
            }
            Err(e) => tracing::debug!(vm = %reference, error = %e, "no vm to wake for {why}"),
        }
    }

    fn mark_asleep(&self, vm: &VmRecord, asleep: bool) {
        if let Some(records) = self.resources.network().records()
            && vm.network != banger_api::VmNetwork::None
        {
            let _ = records.set_asleep(&vm.name, asleep);
        }
    }

    /// Watches a suspended VM's tap (when it has one) and its name.
    async fn watch(self: &Arc<Self>, vm: &VmRecord) {
        self.mark_asleep(vm, true);
        let Some(nic) = self.resources.network().nic_of(vm) else {
            return;
        };
        // The VMM that just ended held the tap's one queue; the kernel
        // lets it go a moment after the process is gone (its last close
        // is deferred), and until then attaching is EBUSY.
        let mut tries = 0;
        let opened = loop {
            match self.resources.network().open_tap(&nic).await {
                Err(_) if tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                other => break other,
            }
        };
        match opened {
            Ok(fd) => self.watch_fd(vm, fd),
            Err(e) => tracing::warn!(
                vm = %vm.name,
                error = %e,
                "cannot watch the tap of a suspended vm: traffic will not wake it"
            ),
        }
    }

    /// Holds `fd`, a queue of `vm`'s tap, filtered to frames for the VM,
    /// and wakes the VM when one arrives.
    fn watch_fd(&self, vm: &VmRecord, fd: OwnedFd) {
        self.mark_asleep(vm, true);
        if let Ok(flags) = rustix::fs::fcntl_getfl(&fd) {
            let _ = rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK);
        }
        let mac = banger_net::wake::parse_mac(&crate::network::mac_for(&vm.id));
        let ip = vm.guest_ip.parse().ok();
        if let (Some(mac), Some(ip)) = (mac, ip)
            && let Err(e) = banger_net::wake::attach(fd.as_fd(), mac, ip)
        {
            tracing::warn!(vm = %vm.name, error = %e, "no wake filter: any frame on the bridge wakes it");
        }
        let Some(this) = self.idle.services.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let (raw, id) = (fd.as_raw_fd(), vm.id.clone());
        let task = tokio::spawn(async move {
            // SAFETY: the `Watcher` owns `raw` and closes it only after this
            // task has ended (`unwatch`, or the replacement below, await it
            // first), so it stays open while registered.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    Polled(raw),
                    tokio::io::Interest::READABLE,
                )
            };
            let Ok(polled) = registered else {
                return;
            };
            if polled.readable().await.is_ok() {
                drop(polled);
                // Its own task: the wake ends this watch, which must not
                // wait for itself.
                tokio::spawn(async move { this.wake_in_background(&id, "traffic").await });
            }
        });
        if let Some(old) = lock(&self.idle.watchers).insert(vm.id.clone(), Watcher { fd, task }) {
            // A second watch of one VM: its queue closes once its task is over.
            old.task.abort();
            tokio::spawn(async move {
                let _ = old.task.await;
                drop(old.fd);
            });
        }
    }

    /// Ends the watch of `vm` (woken, killed or removed): the tap queue,
    /// filter removed, for the caller to hand to the VMM or close.
    pub(crate) async fn unwatch(&self, vm: &VmRecord) -> Option<OwnedFd> {
        self.mark_asleep(vm, false);
        let w = lock(&self.idle.watchers).remove(&vm.id)?;
        w.task.abort();
        let _ = w.task.await;
        let _ = banger_net::wake::detach(w.fd.as_fd());
        Some(w.fd)
    }
}
