//! Suspend and wake: a running VM's guest saved to its own directory and
//! its VMM ended (no host memory, no CPU), then brought back by the next
//! use, exactly where it was.
//!
//! The store keeps saying `running`: that is still what the user wants.
//! What is true meanwhile is on disk, in the VM's directory, and the
//! directory alone says which step a daemon that died was at:
//!
//! - `suspend.tmp/`: a save in progress. The VMM still runs, paused by
//!   banger (`VmHandles::saving`); the next daemon ends the save and runs
//!   the guest again, and the directory goes.
//! - `suspend/`: whole, and the guest has not run since it was written: the
//!   VM is suspended. A VMM still alive next to it (the daemon died before
//!   ending it) is paused since the save, and is ended.
//! - `suspend.waking/`: a wake is loading it. A VMM alive next to it has
//!   not run the guest (the directory goes before the guest runs), so it is
//!   killed and the directory is `suspend/` again.
//!
//! A VM suspended keeps its tap, its `<name>.vm` record and its published
//! ports (the daemon watches its tap to wake it, `crate::idle`). The disks
//! are its own, untouched while the guest is frozen, so the saved memory
//! and the disks are one instant, as for a snapshot. The RAM is saved in
//! the state (a warm VM's copy-on-write pages of its template included);
//! a woken guest runs on anonymous memory, and gives back what it frees.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::{ImageRecord, KernelRecord, VmRecord, VmState};
use banger_vmm::{AnyDriver, Driver, VmHandles};

use super::service::{AGENT_READY_TIMEOUT, BootService, vmm_err};
use crate::error::{CoreError, CoreResult, chain, disk_error, internal};
use crate::paths::vm_files;

/// How long writing or loading a suspended guest may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a wake did, for the log and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Woken {
    /// From the start of the wake until the guest ran.
    pub restore: Duration,
    /// Until its agent answered and its clock was stepped.
    pub ready: Duration,
    /// Frames that waited in its tap, handed to it once it ran.
    pub replayed: usize,
}

fn path(vm: &VmRecord, name: &str) -> PathBuf {
    Path::new(&vm.dir).join(name)
}

/// fsync of a directory, so a rename in it is on disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl BootService {
    /// Whether `vm` is suspended: wanted running, no VMM, and its saved
    /// guest whole in its directory (or being loaded by a wake).
    pub fn is_suspended(&self, vm: &VmRecord) -> bool {
        vm.desired_state == VmState::Running
            && (path(vm, vm_files::SUSPEND).is_dir() || path(vm, vm_files::SUSPEND_WAKING).is_dir())
            && self.live_handles(vm).is_none()
    }

    /// Saves the running `vm`'s guest into its directory and ends its VMM;
    /// its host resources stay. A VM the user paused is refused (its pause
    /// is theirs). On any failure before the state is whole, the guest runs
    /// on. Caller holds the lock.
    pub async fn suspend(&self, vm: &VmRecord) -> CoreResult<()> {
        let mut h = self
            .live_handles(vm)
            .ok_or_else(|| CoreError::conflict(format!("vm {} is not running", vm.name)))?;
        if h.paused {
            return Err(CoreError::conflict(format!(
                "vm {} is paused; resume it first",
                vm.name
            )));
        }
        let tmp = path(vm, vm_files::SUSPEND_TMP);
        crate::scratch::remove_any(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| {
            disk_error(&format!("create {}", tmp.display()), &e, Path::new(&vm.dir))
        })?;
        let driver = self.driver_for(&h);
        // Marked before the pause: a daemon killed from here until the
        // state is whole leaves a guest the next one runs again.
        h.saving = true;
        self.remember_handles(vm, &h)?;
        if let Err(e) = driver.pause(&h).await {
            h.saving = false;
            let _ = self.remember_handles(vm, &h);
            crate::scratch::remove_any(&tmp);
            return Err(vmm_err(&format!("pause {}", vm.name), &e));
        }
        h.paused = true;
        self.remember_handles(vm, &h)?;
        let saved = async {
            driver
                .save_state(&h, &tmp, STATE_TIMEOUT)
                .await
                .map_err(|e| super::snapshot::save_err(vm, &tmp, &e))?;
            tokio::task::block_in_place(|| {
                for f in std::fs::read_dir(&tmp)?.flatten() {
                    std::fs::File::open(f.path())?.sync_all()?;
                }
                sync_dir(&tmp)?;
                std::fs::rename(&tmp, path(vm, vm_files::SUSPEND))?;
                sync_dir(Path::new(&vm.dir))
            })
            .map_err(|e| disk_error("write the suspended guest", &e, Path::new(&vm.dir)))
        }
        .await;
        if let Err(e) = saved {
            // Room first (a full disk), then the guest runs again.
            crate::scratch::remove_any(&tmp);
            crate::scratch::remove_any(&path(vm, vm_files::SUSPEND));
            h.saving = false;
            self.resume_handles(vm, &mut h).await?;
            return Err(e);
        }
        // The guest is on disk and has not run since: end its VMM.
        let _ = driver.kill(&h);
        banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        self.forget_run(vm);
        Ok(())
    }

    /// Brings a suspended `vm` back: its saved guest loaded by a new VMM
    /// on `tap_fd` (the tap queue the daemon held while it slept, whose
    /// waiting frames the guest then reads), run, its agent reached and
    /// its clock stepped. A wake that fails before the guest runs leaves
    /// the VM suspended, as it was; after, it is stopped (its state is
    /// consumed). Caller holds the lock and keeps `tap_fd` open.
    pub async fn wake(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        tap_fd: Option<RawFd>,
        waiting: (Vec<Vec<u8>>, usize),
    ) -> CoreResult<Woken> {
        let t0 = Instant::now();
        let (parked, waking) = (
            path(vm, vm_files::SUSPEND),
            path(vm, vm_files::SUSPEND_WAKING),
        );
        if !waking.is_dir() {
            std::fs::rename(&parked, &waking)
                .map_err(|e| internal(&format!("wake {}: {}", vm.name, parked.display()), &e))?;
        }
        let put_back = || {
            let _ = std::fs::rename(&waking, &parked);
        };
        let (frames, hdr_len) = waiting;
        let inject = (!frames.is_empty() && matches!(self.driver, AnyDriver::Qemu(_)))
            .then(|| self.run_dir(&vm.id).join("inject.sock"));
        let loaded = self
            .load_suspended(vm, image, kernel, tap_fd, inject.clone(), &waking)
            .await;
        let h = match loaded {
            Ok(h) => h,
            Err((spawned, e)) => {
                if let Some(h) = spawned {
                    let _ = self.driver_for(&h).kill(&h);
                    banger_vmm::wait_exit(&h, Duration::from_secs(5)).await;
                }
                self.forget_run(vm);
                put_back();
                return Err(e);
            }
        };
        // The state is consumed before the guest runs: from here the guest
        // lives in this VMM only, and no daemon may load it again. Moved
        // out whole first: a removal cut short by a kill would leave a
        // `suspend.waking/` without its state, which reconcile would park
        // as a suspended guest that can never wake.
        let consumed = self.layout.tmp_dir().join(format!("suspend-{}", vm.id));
        crate::scratch::remove_any(&consumed);
        match std::fs::rename(&waking, &consumed) {
            Ok(()) => crate::scratch::remove_any(&consumed),
            Err(_) => crate::scratch::remove_any(&waking),
        }
        let _ = sync_dir(Path::new(&vm.dir));
        let mut h = h;
        let driver = self.driver_for(&h);
        if let Err(e) = driver.resume(&h).await {
            let _ = driver.kill(&h);
            banger_vmm::wait_exit(&h, Duration::from_secs(5)).await;
            self.clear_runtime(vm).await;
            let mut vm = vm.clone();
            let _ = self.set_state(&mut vm, VmState::Stopped);
            return Err(vmm_err(&format!("wake {}", vm.name), &e));
        }
        // The guest runs: the frames that waited for it now, first.
        if let (AnyDriver::Qemu(q), Some(sock)) = (&driver, &inject)
            && let Err(e) = q.inject_frames(sock, &frames, hdr_len).await
        {
            tracing::warn!(vm = %vm.name, error = %e, "the frames that waited were not handed over");
        }
        h.paused = false;
        self.remember_handles(vm, &h)?;
        self.step_clock(vm).await;
        let restore = t0.elapsed();
        // The clock was stepped through the agent when it answered; reach
        // it now if it did not (a slow guest).
        let connected = self.agent_slot(&vm.id).lock().await.is_some();
        if !connected {
            let client = self
                .driver_for(&h)
                .connect_agent(&h, AGENT_READY_TIMEOUT)
                .await
                .map_err(|e| vmm_err(&format!("reach the agent of {}", vm.name), &e))?;
            *self.agent_slot(&vm.id).lock().await = Some(Arc::new(client));
            self.step_clock(vm).await;
        }
        Ok(Woken {
            restore,
            ready: t0.elapsed(),
            replayed: if inject.is_some() { frames.len() } else { 0 },
        })
    }

    /// Spawns a VMM on the saved guest in `dir` and waits until it is
    /// loaded (paused). On an error, the VMM spawned if any.
    async fn load_suspended(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        tap_fd: Option<RawFd>,
        inject: Option<PathBuf>,
        dir: &Path,
    ) -> Result<VmHandles, (Option<VmHandles>, CoreError)> {
        let initramfs =
            tokio::task::block_in_place(|| self.initramfs_for(kernel)).map_err(|e| (None, e))?;
        let nic = self.resources.network().nic_of(vm);
        let mut spec = self
            .launch_spec(vm, image, kernel, initramfs, nic.as_ref())
            .map_err(|e| (None, e))?;
        spec.incoming = Some(banger_vmm::Incoming { dir: dir.into() });
        spec.tap_fd = tap_fd;
        spec.inject_socket = inject;
        let mut h = self
            .driver
            .spawn(&spec)
            .await
            .map_err(|e| (None, vmm_err(&format!("wake {}", vm.name), &e)))?;
        // Paused by banger, not the user: a daemon that dies before the
        // guest runs leaves a mark that it must be run (or, while the
        // state is still on disk, ended).
        h.paused = true;
        h.saving = true;
        if let Err(e) = self.remember_handles(vm, &h) {
            return Err((Some(h), e));
        }
        if let Err(e) = self.driver.await_loaded(&h, STATE_TIMEOUT).await {
            let tail = super::console::console_tail(&Self::console_log(vm));
            return Err((
                Some(h),
                CoreError::internal(format!(
                    "wake {}: the saved guest did not load: {}{tail}",
                    vm.name,
                    chain(&e)
                )),
            ));
        }
        h.saving = false;
        Ok(h)
    }

    /// At daemon start, a VM wanted running whose directory holds a
    /// suspend at some step (see the module docs): finishes or undoes that
    /// step. Returns whether the VM is suspended now; `alive` are its live
    /// handles, taken (and so ended here) when the VMM must go.
    pub(super) async fn reconcile_suspend(
        &self,
        vm: &VmRecord,
        alive: &mut Option<VmHandles>,
        notes: &mut Vec<String>,
    ) -> bool {
        let (tmp, parked, waking) = (
            path(vm, vm_files::SUSPEND_TMP),
            path(vm, vm_files::SUSPEND),
            path(vm, vm_files::SUSPEND_WAKING),
        );
        // An unfinished save: the VMM (if alive) runs on; the state goes.
        crate::scratch::remove_any(&tmp);
        if waking.is_dir() {
            // The guest has not run from it (the directory goes first).
            if let Some(h) = alive.take() {
                let _ = self.driver_for(&h).kill(&h);
                banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
                notes.push(format!(
                    "ended the unfinished wake of vm {}; it stays suspended",
                    vm.name
                ));
            }
            if std::fs::rename(&waking, &parked).is_err() {
                crate::scratch::remove_any(&waking);
            }
        }
        if !parked.is_dir() {
            return false;
        }
        match alive.take() {
            // Saved, but the daemon died before ending the VMM: the guest
            // is paused since the save and ends here.
            Some(h) if h.saving => {
                let _ = self.driver_for(&h).kill(&h);
                banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
                notes.push(format!("finished suspending vm {}", vm.name));
            }
            // A guest that runs beside a saved state it is no longer: the
            // state is stale.
            Some(h) => {
                *alive = Some(h);
                crate::scratch::remove_any(&parked);
                return false;
            }
            None => {}
        }
        // A wake killed before it recorded its VMM leaves one that no
        // handles name (loading, or waiting for the state): a suspended
        // VM has none, and that one holds the disks' locks.
        Self::kill_unrecorded_vmms(vm, notes).await;
        self.forget_run(vm);
        notes.push(format!("vm {} is suspended", vm.name));
        true
    }
}
