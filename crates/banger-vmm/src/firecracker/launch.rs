//! The requests that configure and start a VM under Firecracker, in the
//! order it needs them: machine, boot source with banger's command line,
//! drives, network, vsock and balloon, then `InstanceStart`. The bodies
//! are [`super::api`]'s and [`super::balloon`]'s, each checked as it is
//! built.

use std::path::Path;

use super::api::{
    ActionType, ApiRequest, BootSource, Drive, MachineConfig, NetworkInterface, Vsock, action,
    drive_id, iface_id, put,
};
use crate::Result;
use crate::spec::{DiskRole, LaunchSpec};

/// The guest device path of a disk: Firecracker attaches drives in the
/// order they are configured, so the n-th drive is `/dev/vd{a+n}`.
fn device_of(index: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(index).unwrap_or(25).min(25));
    format!("/dev/vd{letter}")
}

/// The kernel command line under Firecracker.
pub fn cmdline(spec: &LaunchSpec) -> String {
    // pci=off: no PCI bus on Firecracker; probing for one costs boot time.
    let mut c = String::from("console=ttyS0 quiet reboot=k panic=1 pci=off");
    let params = spec.params_with_disks(|i, _| device_of(i));
    c.push(' ');
    c.push_str(&params.to_string());
    c
}

/// Every request that configures the VM of `spec`, in order, up to but
/// not including `InstanceStart`; an error names the first field the real
/// binary would refuse.
///
/// No `/logger` or `/metrics`: Firecracker's log goes to its stdout, which
/// the daemon drains into the bounded console log with the guest's serial
/// output (a log or metrics file of its own would grow without bound, the
/// guest deciding how fast), and banger reads no metrics.
pub fn configure_requests(spec: &LaunchSpec) -> Result<Vec<ApiRequest>> {
    let p = |p: &Path| p.display().to_string();
    let mut r = vec![
        put(
            "/machine-config",
            &MachineConfig {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
                smt: Some(false),
            },
        )?,
        put(
            "/boot-source",
            &BootSource {
                kernel_image_path: p(&spec.kernel),
                boot_args: Some(cmdline(spec)),
                initrd_path: spec.initramfs.as_deref().map(p),
            },
        )?,
    ];
    for d in &spec.disks {
        let id = drive_id(d.role);
        r.push(put(
            format!("/drives/{id}"),
            &Drive {
                drive_id: id,
                is_root_device: false,
                path_on_host: p(&d.path),
                is_read_only: d.read_only || d.role == DiskRole::Base,
                io_engine: None,
            },
        )?);
    }
    if let Some(tap) = &spec.tap {
        let id = iface_id();
        r.push(put(
            format!("/network-interfaces/{id}"),
            &NetworkInterface {
                iface_id: id,
                host_dev_name: tap.clone(),
                guest_mac: spec.mac.clone(),
            },
        )?);
    }
    r.push(put(
        "/vsock",
        &Vsock {
            guest_cid: spec.vsock_cid.unwrap_or(3),
            uds_path: p(&spec.agent_socket),
        },
    )?);
    r.push(super::balloon::configure()?);
    Ok(r)
}

/// [`configure_requests`] then `InstanceStart`.
pub fn launch_requests(spec: &LaunchSpec) -> Result<Vec<ApiRequest>> {
    let mut r = configure_requests(spec)?;
    r.push(action(ActionType::InstanceStart));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_named_by_attach_order() {
        assert_eq!(device_of(0), "/dev/vda");
        assert_eq!(device_of(2), "/dev/vdc");
    }
}
