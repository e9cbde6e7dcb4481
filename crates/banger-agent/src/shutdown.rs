//! Ending the guest.
//!
//! As PID 1 the agent does it itself: stop everything, flush, remount
//! read-only, reboot(2). Under QEMU `-no-reboot` and under Firecracker a
//! reboot ends the VMM just like a power-off, so `RB_AUTOBOOT` is the
//! fallback when power-off is not supported by the machine model.
//!
//! When an image init is PID 1, it owns shutdown: systemd powers off on
//! SIGRTMIN+4 (reboots on SIGRTMIN+5), busybox init on SIGUSR2 (SIGTERM).
//! If init has not ended the VM within a grace period, the agent forces it.

use std::time::{Duration, Instant};

use crate::{boot, sys};

const INIT_GRACE: Duration = Duration::from_secs(20);

/// Shuts the guest down; does not return when it works.
pub fn run(reboot: bool, pid1: bool) {
    crate::log(if reboot { "rebooting" } else { "powering off" });
    if !pid1 {
        let systemd = std::fs::read_link("/proc/1/exe")
            .map(|p| p.to_string_lossy().contains("systemd"))
            .unwrap_or(false);
        let sig = match (systemd, reboot) {
            (true, false) => libc::SIGRTMIN() + 4,
            (true, true) => libc::SIGRTMIN() + 5,
            (false, false) => libc::SIGUSR2,
            (false, true) => libc::SIGTERM,
        };
        // The kernel drops signals to PID 1 that it neither catches nor
        // blocks; an init still starting up (systemd sets up its signalfd
        // a second or so in under TCG) would lose the request.
        if !wait_until_init_handles(sig, INIT_GRACE) {
            crate::log(&format!("init does not handle signal {sig}; forcing"));
        } else if sys::kill(1, sig).is_ok() {
            std::thread::sleep(INIT_GRACE);
            crate::log("init did not shut down in time; forcing");
        }
    } else {
        // Give processes a moment to flush, then make sure none writes
        // after the remount.
        let _ = sys::kill(-1, libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
        let _ = sys::kill(-1, libc::SIGKILL);
    }
    boot::quiesce_disks();
    let cmd = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    let e = sys::reboot(cmd);
    crate::log(&format!("reboot({cmd:#x}) failed: {e}; trying RB_AUTOBOOT"));
    let e = sys::reboot(libc::RB_AUTOBOOT);
    crate::log(&format!("reboot failed: {e}"));
}

/// Whether signal `sig` is in a `/proc/PID/status` mask (`SigBlk:`/`SigCgt:`).
fn in_mask(status: &str, field: &str, sig: i32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0)
}

/// `rt_sigtimedwait` on x86_64. An init waiting in it (busybox) has the
/// signals it waits for moved out of its visible blocked mask for the
/// duration of the call, yet the kernel still delivers them.
const SYS_RT_SIGTIMEDWAIT: &str = "128";

/// Waits until PID 1 catches or blocks `sig`, or sits in
/// `rt_sigtimedwait`.
fn wait_until_init_handles(sig: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let status = std::fs::read_to_string("/proc/1/status").unwrap_or_default();
        if in_mask(&status, "SigCgt:", sig) || in_mask(&status, "SigBlk:", sig) {
            return true;
        }
        let syscall = std::fs::read_to_string("/proc/1/syscall").unwrap_or_default();
        if syscall.split_ascii_whitespace().next() == Some(SYS_RT_SIGTIMEDWAIT) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_masks() {
        let st = "Name:\tsystemd\nSigBlk:\t7be3c0fe28014a03\nSigCgt:\t00000001000004ec\n";
        // systemd blocks SIGRTMIN+4 (38): bit 37.
        assert!(in_mask(st, "SigBlk:", 38));
        assert!(!in_mask(st, "SigCgt:", 38));
        // SIGUSR2 (12): bit 11 of 0x4ec? 0x4ec = 0b10011101100: bit 10 set,
        // bit 11 not.
        assert!(!in_mask(st, "SigCgt:", 12));
        assert!(in_mask(st, "SigCgt:", 11));
        assert!(!in_mask(st, "SigCgt:", 0));
        assert!(!in_mask("", "SigCgt:", 1));
    }
}
