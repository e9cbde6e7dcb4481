//! At daemon start: re-adopt the VMs whose VMM still runs, end what a dead
//! daemon left half-done (saves, templates), and clean up after the VMs
//! that died while no daemon watched.

use std::time::Duration;

use banger_api::{VmRecord, VmState};
use banger_vmm::Driver;

use super::service::BootService;

impl BootService {
    /// At daemon start: re-adopt VMs whose VMM still runs, and for the others
    /// remove their leftovers and record them as stopped.
    pub async fn reconcile(&self, vms: Vec<VmRecord>) -> Vec<String> {
        let mut notes = Vec::new();
        self.clean_interrupted_templates(&mut notes).await;
        let mut live = Vec::new();
        for mut vm in vms {
            let handles = Self::load_handles(&vm);
            let mut alive = handles
                .as_ref()
                .filter(|h| self.driver_for(h).is_alive(h))
                .cloned();
            // A suspended VM keeps its host resources, as a live one does.
            if vm.desired_state == VmState::Running
                && self.reconcile_suspend(&vm, &mut alive, &mut notes).await
            {
                live.push(vm);
                continue;
            }
            match (vm.desired_state, alive) {
                (VmState::Running, Some(mut h)) => {
                    self.resume_interrupted_save(&vm, &mut h).await;
                    // Its console is read again (bounded) where the VMM
                    // allows it.
                    self.driver_for(&h)
                        .attach_console(&h, self.config.logs.max_bytes());
                    self.adopt_handles(&vm, h);
                    notes.push(format!("re-adopted running vm {}", vm.name));
                    live.push(vm);
                }
                (VmState::Running, None) => {
                    Self::kill_unrecorded_vmms(&vm, &mut notes).await;
                    self.clear_runtime(&vm).await;
                    if self.set_state(&mut vm, VmState::Stopped).is_ok() {
                        notes.push(format!(
                            "vm {} died while the daemon was away; marked stopped",
                            vm.name
                        ));
                    }
                }
                (VmState::Stopped, Some(h)) => {
                    // Only a daemon killed between spawn and the state flip
                    // gets here: nobody asked for this VM to run.
                    let _ = self.driver_for(&h).kill(&h);
                    self.clear_runtime(&vm).await;
                    notes.push(format!("killed stray vmm of stopped vm {}", vm.name));
                }
                (VmState::Stopped, None) => {
                    Self::kill_unrecorded_vmms(&vm, &mut notes).await;
                    if handles.is_some() {
                        self.clear_runtime(&vm).await;
                    }
                }
            }
        }
        // Dead VMs released theirs in clear_runtime; live and suspended
        // ones keep theirs.
        let live: Vec<&VmRecord> = live.iter().collect();
        notes.extend(self.resources.reconcile(&live, &[]).await);
        notes
    }

    /// Kills any VMM still running on `vm`'s disks that no handles name: a
    /// daemon killed after the VMM started and before `handles.json` was
    /// written leaves one (it would hold the disks' write locks and block
    /// the next start). Found by its arguments, which name the VM's id.
    pub(super) async fn kill_unrecorded_vmms(vm: &VmRecord, notes: &mut Vec<String>) {
        // Named by its id: QEMU's disks under `vms/<id>/`, Firecracker's
        // sockets there or, jailed, its chroot `<id>-<hash>`.
        for (pid, start) in banger_vmm::process::vmms_naming(&vm.id) {
            if banger_vmm::process::kill(pid, start).is_ok() {
                for _ in 0..50 {
                    if !banger_vmm::process::is_alive(pid, start) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                notes.push(format!(
                    "killed vmm {pid} of vm {}, which no handles named",
                    vm.name
                ));
            }
        }
    }
}
