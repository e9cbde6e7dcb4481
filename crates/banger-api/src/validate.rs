//! Checks on user-supplied values that the CLI and the daemon must agree on.
//! The daemon is the authority; the CLI calls these only to fail fast.

use crate::ByteSize;

/// Smallest overlay or work disk: room for a journal and some files.
pub const MIN_DISK_BYTES: u64 = 64 * ByteSize::MIB;
/// Largest disk we create: ext4 with 4 KiB blocks tops out far above, but a
/// typo like `8T` for `8G` should be caught.
pub const MAX_DISK_BYTES: u64 = 2 * 1024 * ByteSize::GIB;
pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MIB: u64 = 128;
pub const MAX_MEMORY_MIB: u64 = 1024 * 1024;

/// VM, image and kernel names: a DNS label (`<name>.vm` must resolve), so
/// 1-63 of `[a-z0-9-]`, starting with a letter or digit, not ending with `-`.
/// Image and kernel names also allow `.`, `_` and `:` (e.g. `debian:bookworm`).
pub fn vm_name(name: &str) -> Result<(), String> {
    label(name, "vm name", &[])
}

pub fn artifact_name(name: &str, what: &str) -> Result<(), String> {
    label(name, what, &['.', '_', ':'])
}

fn label(name: &str, what: &str, extra: &[char]) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > 63 {
        return Err(format!("{what} {name:?} is longer than 63 characters"));
    }
    let ok =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c);
    if let Some(bad) = name.chars().find(|c| !ok(*c)) {
        let allowed = if extra.is_empty() {
            "lowercase letters, digits and '-'".to_string()
        } else {
            format!(
                "lowercase letters, digits, '-' and {}",
                extra
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(format!("{what} {name:?} contains {bad:?}; use {allowed}"));
    }
    let first = name.chars().next().unwrap_or('-');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!("{what} {name:?} must start with a letter or digit"));
    }
    if name.ends_with('-') {
        return Err(format!("{what} {name:?} must not end with '-'"));
    }
    Ok(())
}

pub fn disk_size(bytes: u64, what: &str) -> Result<(), String> {
    if bytes < MIN_DISK_BYTES {
        return Err(format!(
            "{what} {} is too small; the minimum is {}",
            ByteSize(bytes),
            ByteSize(MIN_DISK_BYTES)
        ));
    }
    if bytes > MAX_DISK_BYTES {
        return Err(format!(
            "{what} {} is too large; the maximum is {}",
            ByteSize(bytes),
            ByteSize(MAX_DISK_BYTES)
        ));
    }
    if !bytes.is_multiple_of(ByteSize::MIB) {
        return Err(format!("{what} {bytes} must be a whole number of MiB"));
    }
    Ok(())
}

pub fn vcpus(n: u32) -> Result<(), String> {
    if n == 0 || n > MAX_VCPUS {
        return Err(format!("vcpus {n} is out of range 1..={MAX_VCPUS}"));
    }
    Ok(())
}

pub fn memory_mib(n: u64) -> Result<(), String> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&n) {
        return Err(format!(
            "memory {n} MiB is out of range {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}"
        ));
    }
    Ok(())
}

/// The shortest idle period a VM may be suspended after: below it a VM
/// would be saved and woken for the gaps between two commands.
pub const MIN_IDLE_SUSPEND_SECS: u64 = 5;
/// The longest: a year.
pub const MAX_IDLE_SUSPEND_SECS: u64 = 366 * 24 * 3600;

/// An idle period as typed (`--idle-suspend`, `vm.idle_suspend`):
/// `30s`, `10m`, `1h 30m`, or `0`/`off`/`never` for never. In seconds,
/// 0 meaning never.
pub fn idle_suspend(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if matches!(t, "0" | "off" | "never") {
        return Ok(0);
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("idle period {text:?}: {e} (write e.g. 30s, 10m, 1h, or off)"))?;
    let secs = d.as_secs();
    idle_suspend_secs(secs)?;
    Ok(secs)
}

/// An idle period in seconds: 0 (never) or within
/// [`MIN_IDLE_SUSPEND_SECS`]..=[`MAX_IDLE_SUSPEND_SECS`].
pub fn idle_suspend_secs(secs: u64) -> Result<(), String> {
    if secs != 0 && !(MIN_IDLE_SUSPEND_SECS..=MAX_IDLE_SUSPEND_SECS).contains(&secs) {
        return Err(format!(
            "idle period of {secs}s is out of range {MIN_IDLE_SUSPEND_SECS}s..={MAX_IDLE_SUSPEND_SECS}s (or 0 for never)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_periods() {
        assert_eq!(idle_suspend("30s"), Ok(30));
        assert_eq!(idle_suspend("10m"), Ok(600));
        assert_eq!(idle_suspend("1h 30m"), Ok(5400));
        for never in ["0", "off", "never", " off "] {
            assert_eq!(idle_suspend(never), Ok(0));
        }
        for bad in ["", "soon", "-5s", "1s", "2years", "10"] {
            let e = idle_suspend(bad).unwrap_err();
            assert!(e.contains("idle period"), "{bad}: {e}");
        }
        assert!(idle_suspend_secs(4).is_err());
        assert!(idle_suspend_secs(0).is_ok());
    }

    #[test]
    fn vm_names() {
        for good in ["a", "web-1", "0day", &"x".repeat(63)] {
            assert!(vm_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a_b",
            "a.b",
            "a b",
            "ünï",
            &"x".repeat(64),
            "../x",
        ] {
            assert!(vm_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_names() {
        assert!(artifact_name("debian:bookworm", "image name").is_ok());
        assert!(artifact_name("linux-6.1_cloud", "kernel name").is_ok());
        assert!(artifact_name("../etc", "image name").is_err());
        assert!(artifact_name("a/b", "image name").is_err());
    }

    #[test]
    fn sizes_and_counts() {
        assert!(disk_size(8 << 30, "work disk").is_ok());
        assert!(disk_size(1 << 20, "work disk").is_err());
        assert!(disk_size((8 << 30) + 1, "work disk").is_err());
        assert!(disk_size(8 << 40, "work disk").is_err());
        assert!(vcpus(0).is_err() && vcpus(2).is_ok());
        assert!(memory_mib(64).is_err() && memory_mib(1024).is_ok());
    }
}
