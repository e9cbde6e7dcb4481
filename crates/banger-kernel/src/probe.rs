//! Recognising a kernel image and reading its release.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::KernelError;

/// The two kernel image formats banger's VMMs boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An x86 boot-protocol image (`vmlinuz`, `arch/x86/boot/bzImage`).
    BzImage,
    /// An uncompressed ELF `vmlinux`, as Firecracker prefers.
    Elf,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// The first word of the kernel's version string (`uname -r`).
    pub release: Option<String>,
}

/// x86 boot protocol (Documentation/arch/x86/boot.rst): the setup header's
/// `header` field holds "HdrS" at 0x202, and `kernel_version` at 0x20E is a
/// pointer to a NUL-terminated string, relative to 0x200.
const HDRS_OFFSET: u64 = 0x202;
const KERNEL_VERSION_OFFSET: u64 = 0x20E;
const SETUP_BASE: u64 = 0x200;
/// Version strings are under 200 bytes; more means a corrupt pointer.
const MAX_VERSION_LEN: usize = 512;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `linux_banner` in init/version.c: "Linux version <release> (...".
const LINUX_BANNER: &[u8] = b"Linux version ";

/// Open `path` for reading only if it is a regular file. Opened
/// non-blocking and checked on the open descriptor: a FIFO would block the
/// open itself until a writer came, and `/dev/zero` would never end.
pub(crate) fn open_regular(path: &Path) -> Result<File, KernelError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(KernelError::io("open", path))?;
    let meta = file.metadata().map_err(KernelError::io("stat", path))?;
    if !meta.is_file() {
        return Err(KernelError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    // O_NONBLOCK means nothing for a regular file's reads; nothing to undo.
    Ok(file)
}

/// Reads just enough of `path` to tell whether it is a kernel image and,
/// when it can, which release.
pub fn probe(path: &Path) -> Result<KernelInfo, KernelError> {
    let file = open_regular(path)?;
    let not_a_kernel = |reason: &str| KernelError::NotAKernel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };

    let mut magic = [0u8; 4];
    let has_magic = read_exact_at(&file, &mut magic, 0).map_err(KernelError::io("read", path))?;
    if has_magic && &magic == ELF_MAGIC {
        let release = scan_banner(&file).map_err(KernelError::io("read", path))?;
        return Ok(KernelInfo {
            format: KernelFormat::Elf,
            release,
        });
    }

    let mut hdrs = [0u8; 4];
    let has_header =
        read_exact_at(&file, &mut hdrs, HDRS_OFFSET).map_err(KernelError::io("read", path))?;
    if !has_header || &hdrs != b"HdrS" {
        return Err(not_a_kernel("no ELF magic and no x86 boot header"));
    }
    let mut ptr = [0u8; 2];
    if !read_exact_at(&file, &mut ptr, KERNEL_VERSION_OFFSET)
        .map_err(KernelError::io("read", path))?
    {
        return Err(not_a_kernel("truncated boot header"));
    }
    let ptr = u16::from_le_bytes(ptr);
    // Zero means the image carries no version string (allowed by the protocol).
    if ptr == 0 {
        return Ok(KernelInfo {
            format: KernelFormat::BzImage,
            release: None,
        });
    }
    let mut buf = vec![0u8; MAX_VERSION_LEN];
    let n = read_at_most(&file, &mut buf, u64::from(ptr) + SETUP_BASE)
        .map_err(KernelError::io("read", path))?;
    let text = &buf[..n];
    let Some(end) = text.iter().position(|&b| b == 0) else {
        return Err(not_a_kernel("kernel version string is not terminated"));
    };
    let release = first_word(&text[..end])
        .ok_or_else(|| not_a_kernel("kernel version string is not printable text"))?;
    Ok(KernelInfo {
        format: KernelFormat::BzImage,
        release: Some(release),
    })
}

/// The first whitespace-separated word, if the text is printable ASCII.
fn first_word(text: &[u8]) -> Option<String> {
    if text.is_empty() || !text.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    text.split_whitespace().next().map(str::to_string)
}

/// Fills `buf` from `offset`; `Ok(false)` when the file is too short.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Finds the release in a vmlinux's `linux_banner`. ELF has no header field
/// for it, so this streams the file once looking for the banner text.
fn scan_banner(file: &File) -> io::Result<Option<String>> {
    const CHUNK: usize = 1 << 20;
    // Keep enough of the previous chunk to see a banner split across reads.
    const KEEP: usize = 256;
    let mut reader = io::BufReader::new(file);
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + KEEP);
    let mut chunk = vec![0u8; CHUNK];
    // BufReader over &File reads from the current offset, which read_at did
    // not move, so this starts at the beginning.
    loop {
        let n = reader.read(&mut chunk)?;
        window.extend_from_slice(&chunk[..n]);
        let mut from = 0;
        while let Some(pos) = find(&window[from..], LINUX_BANNER) {
            let start = from + pos + LINUX_BANNER.len();
            let rest = &window[start..];
            let end = rest.iter().position(|&b| b == b' ' || b == 0);
            match end {
                Some(end) => {
                    if let Some(word) = first_word(&rest[..end]) {
                        // A format string like "Linux version %s" is not it.
                        if !word.contains('%') {
                            return Ok(Some(word));
                        }
                    }
                    from = start;
                }
                // The word runs past what we have read: read more first.
                None if n > 0 => break,
                None => return Ok(None),
            }
        }
        if n == 0 {
            return Ok(None);
        }
        let drop_to = window.len().saturating_sub(KEEP);
        window.drain(..drop_to);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal image that passes the bzImage checks: zeros, the boot
    /// header magic and a version string where the header points.
    pub(crate) fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x4000];
        img[0x1FE] = 0x55;
        img[0x1FF] = 0xAA;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let version_at: u16 = 0x3000;
        img[0x20E..0x210].copy_from_slice(&(version_at - 0x200).to_le_bytes());
        let at = usize::from(version_at);
        img[at..at + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn bzimage_release_is_first_word_of_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "vmlinuz",
            &fake_bzimage("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"),
        );
        let info = probe(&p).unwrap();
        assert_eq!(info.format, KernelFormat::BzImage);
        assert_eq!(info.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn bzimage_with_bad_version_pointer_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = fake_bzimage("6.1.0");
        // Points past the end of the file.
        img[0x20E..0x210].copy_from_slice(&0xF000u16.to_le_bytes());
        let p = write(dir.path(), "vmlinuz", &img);
        let err = probe(&p).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel { .. }), "{err:?}");
    }

    #[test]
    fn elf_release_from_banner_split_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = b"\x7fELF\x02\x01\x01".to_vec();
        img.resize((1 << 20) - 20, 0);
        img.extend_from_slice(b"Linux version %s (%s)\0");
        img.extend_from_slice(b"Linux version 6.12.9-custom (me@host) #1\0");
        img.resize(img.len() + 4096, 0);
        let p = write(dir.path(), "vmlinux", &img);
        let info = probe(&p).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        assert_eq!(info.release.as_deref(), Some("6.12.9-custom"));

        let p = write(dir.path(), "bare", b"\x7fELF\x02\x01\x01\0\0\0");
        assert_eq!(probe(&p).unwrap().release, None);
    }

    #[test]
    fn random_bytes_and_short_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        // A fixed xorshift stream: deterministic "random" content.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..0x10000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        for (name, bytes) in [("noise", &noise[..]), ("empty", &[][..]), ("short", b"MZ")] {
            let p = write(dir.path(), name, bytes);
            let err = probe(&p).unwrap_err();
            assert!(
                matches!(err, KernelError::NotAKernel { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains("is not a kernel"), "{err}");
        }
    }

    #[test]
    fn missing_file_names_path_and_operation() {
        let err = probe(Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert_eq!(err.to_string(), "cannot open /nonexistent/vmlinuz");
    }
}
