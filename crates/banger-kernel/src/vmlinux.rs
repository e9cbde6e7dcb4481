//! An uncompressed ELF `vmlinux` from a bzImage, for VMMs that cannot
//! boot a bzImage (Firecracker on x86_64 loads ELF only).
//!
//! A bzImage is real-mode setup code, a small decompressor and the
//! compressed kernel (`vmlinux.bin`, an ELF stripped of symbols, followed by
//! its relocations). Boot protocol 2.08+ says exactly where the compressed
//! payload is (`payload_offset`/`payload_length` in the setup header); for
//! older or odd images we fall back to what the kernel's own
//! `scripts/extract-vmlinux` does: look for each codec's magic and keep the
//! first stream that decompresses to an ELF.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::KernelError;

/// The codecs a bzImage payload can use (`CONFIG_KERNEL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lzma,
    Zstd,
    Lz4,
    Bzip2,
    Lzo,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
        }
    }

    /// The stream magics extract-vmlinux searches for.
    fn magic(self) -> &'static [u8] {
        match self {
            Compression::Gzip => b"\x1f\x8b\x08",
            Compression::Xz => b"\xfd7zXZ\x00",
            Compression::Lzma => b"\x5d\x00\x00\x00",
            Compression::Zstd => b"\x28\xb5\x2f\xfd",
            Compression::Lz4 => b"\x02\x21\x4c\x18",
            Compression::Bzip2 => b"BZh",
            Compression::Lzo => b"\x89LZO",
        }
    }

    fn sniff(data: &[u8]) -> Option<Compression> {
        ALL.into_iter().find(|c| data.starts_with(c.magic()))
    }
}

const ALL: [Compression; 7] = [
    Compression::Gzip,
    Compression::Xz,
    Compression::Zstd,
    Compression::Lz4,
    Compression::Lzma,
    Compression::Bzip2,
    Compression::Lzo,
];

/// A decompressed kernel larger than this is a corrupt or hostile payload
/// (distribution kernels are 30-70 MiB).
const MAX_VMLINUX: u64 = 1 << 30;

/// ELF constants (include/uapi/linux/elf.h).
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

/// What the ELF header of a vmlinux says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_type`; a kernel is `ET_EXEC` (2).
    pub elf_type: u16,
    /// `e_machine`; `EM_X86_64` (62) here.
    pub machine: u16,
    /// `e_entry`: the physical address the loader jumps to.
    pub entry: u64,
    /// The `PT_LOAD` segments.
    pub segments: Vec<Segment>,
    /// Section names, in header order.
    pub sections: Vec<String>,
}

/// One loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl ElfInfo {
    /// Whether a VMM loading segments by physical address (as Firecracker
    /// does) would jump into loaded code.
    pub fn entry_is_loaded(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.paddr <= self.entry && self.entry < s.paddr.saturating_add(s.memsz))
    }

    /// An x86_64 executable with a loaded entry point: what Firecracker boots.
    pub fn is_bootable_x86_64(&self) -> bool {
        self.elf_type == ET_EXEC && self.machine == EM_X86_64 && self.entry_is_loaded()
    }
}

/// Decompresses the payload of the bzImage at `bzimage` into `out` (created
/// new) and returns its ELF header. `out` is not created on error.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(Compression, ElfInfo), KernelError> {
    let data = fs::read(bzimage).map_err(KernelError::io("read", bzimage))?;
    let not_a_kernel = |reason: String| KernelError::NotAKernel {
        path: bzimage.to_path_buf(),
        reason,
    };
    let (codec, elf) = match header_payload(&data) {
        Some(payload) => {
            let codec = Compression::sniff(payload).ok_or_else(|| {
                not_a_kernel("the bzImage payload has no known compression magic".to_string())
            })?;
            let elf = decompress(codec, payload).map_err(|e| {
                not_a_kernel(format!(
                    "cannot decompress its {} payload: {e}",
                    codec.as_str()
                ))
            })?;
            (codec, elf)
        }
        None => scan(&data).ok_or_else(|| {
            not_a_kernel("no compressed stream in it decompresses to an ELF vmlinux".to_string())
        })?,
    };
    let info = parse_elf(&elf).map_err(|reason| {
        not_a_kernel(format!(
            "its {} payload is not a vmlinux: {reason}",
            codec.as_str()
        ))
    })?;
    write_new(out, &elf)?;
    Ok((codec, info))
}

/// Reads the ELF header of the vmlinux at `path`.
pub fn read_elf(path: &Path) -> Result<ElfInfo, KernelError> {
    let data = fs::read(path).map_err(KernelError::io("read", path))?;
    parse_elf(&data).map_err(|reason| KernelError::NotAKernel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(KernelError::io("create", path))?;
    if let Err(e) = f.write_all(bytes) {
        let _ = fs::remove_file(path);
        return Err(KernelError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// The compressed payload named by the setup header (boot protocol 2.08+).
fn header_payload(data: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    if data.get(0x202..0x206) != Some(b"HdrS") || u16_at(0x206)? < 0x208 {
        return None;
    }
    // setup_sects 0 means 4 (boot.rst); the protected-mode code starts
    // after the boot sector and the setup sectors.
    let setup_sects = match *data.get(0x1F1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = usize::try_from(u32_at(0x248)?).ok()?;
    let length = usize::try_from(u32_at(0x24C)?).ok()?;
    let from = start.checked_add(offset)?;
    data.get(from..from.checked_add(length)?)
        .filter(|p| !p.is_empty())
}

/// extract-vmlinux's search: every occurrence of every magic, first ELF wins.
fn scan(data: &[u8]) -> Option<(Compression, Vec<u8>)> {
    for codec in ALL {
        let magic = codec.magic();
        let mut from = 0;
        while let Some(pos) = find(&data[from..], magic) {
            let at = from + pos;
            if let Ok(out) = decompress(codec, &data[at..])
                && out.starts_with(b"\x7fELF")
            {
                return Some((codec, out));
            }
            from = at + 1;
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One stream of `codec` from the start of `input`; what follows it (the
/// kernel appends the uncompressed size) is ignored.
fn decompress(codec: Compression, input: &[u8]) -> io::Result<Vec<u8>> {
    let reader: Box<dyn Read + '_> = match codec {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(input)),
        Compression::Xz => {
            return lzma_stream(
                xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(io::Error::other)?,
                input,
            );
        }
        Compression::Lzma => {
            return lzma_stream(
                xz2::stream::Stream::new_lzma_decoder(u64::MAX).map_err(io::Error::other)?,
                input,
            );
        }
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input)?.single_frame())
        }
        Compression::Lz4 => return lz4_legacy(input),
        Compression::Bzip2 | Compression::Lzo => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} kernels are not supported; rebuild with CONFIG_KERNEL_GZIP, _XZ, _ZSTD or _LZ4",
                    codec.as_str()
                ),
            ));
        }
    };
    let mut out = Vec::new();
    reader.take(MAX_VMLINUX).read_to_end(&mut out)?;
    if out.len() as u64 >= MAX_VMLINUX {
        return Err(io::Error::other("decompresses to more than 1 GiB"));
    }
    Ok(out)
}

/// One xz or lzma-alone stream through liblzma, stopping at its end (the
/// reader adaptors would read on into the size the kernel appends).
fn lzma_stream(mut stream: xz2::stream::Stream, input: &[u8]) -> io::Result<Vec<u8>> {
    use xz2::stream::{Action, Status};
    let mut out = Vec::with_capacity(64 << 20);
    loop {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(consumed..).unwrap_or_default();
        let action = if rest.is_empty() {
            Action::Finish
        } else {
            Action::Run
        };
        let produced = out.len();
        let status = stream
            .process_vec(rest, &mut out, action)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            if out.len() as u64 >= MAX_VMLINUX {
                return Err(io::Error::other("decompresses to more than 1 GiB"));
            }
            out.reserve(out.capacity());
        } else if rest.is_empty() && out.len() == produced {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated stream",
            ));
        }
    }
}

/// The LZ4 "legacy" format the kernel uses (`lz4 -l`, lib/decompress_unlz4.c):
/// the magic, then blocks of at most 8 MiB of output, each preceded by its
/// compressed size (u32 LE). A repeated magic starts a new stream; anything
/// shorter than a block header, or a size running past the input, ends it
/// (the kernel appends the 4-byte uncompressed size after the last block).
fn lz4_legacy(input: &[u8]) -> io::Result<Vec<u8>> {
    const MAGIC: u32 = 0x184C_2102;
    const BLOCK: usize = 8 << 20;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let word = |at: usize| {
        input
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    if word(0) != Some(MAGIC) {
        return Err(bad("no lz4 legacy magic"));
    }
    let mut at = 4;
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK];
    while let Some(size) = word(at) {
        if size == MAGIC {
            at += 4;
            continue;
        }
        let size = usize::try_from(size).map_err(|_| bad("lz4 block size"))?;
        let Some(chunk) = input.get(at + 4..at + 4 + size) else {
            break;
        };
        let n = lz4_flex::block::decompress_into(chunk, &mut block)
            .map_err(|e| bad(&format!("lz4 block at {at}: {e}")))?;
        out.extend_from_slice(&block[..n]);
        if out.len() as u64 >= MAX_VMLINUX {
            return Err(bad("decompresses to more than 1 GiB"));
        }
        at += 4 + size;
    }
    if out.is_empty() {
        return Err(bad("empty lz4 stream"));
    }
    Ok(out)
}

/// The parts of a little-endian ELF64 header we check.
pub(crate) fn parse_elf(elf: &[u8]) -> Result<ElfInfo, &'static str> {
    const TRUNCATED: &str = "truncated ELF header";
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let usize_at = |o: usize| u64_at(o).and_then(|v| usize::try_from(v).ok());
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("no ELF magic");
    }
    if elf.get(4..6) != Some(&[2, 1]) {
        return Err("not a little-endian 64-bit ELF");
    }
    let elf_type = u16_at(16).ok_or(TRUNCATED)?;
    let machine = u16_at(18).ok_or(TRUNCATED)?;
    let entry = u64_at(24).ok_or(TRUNCATED)?;
    let phoff = usize_at(32).ok_or(TRUNCATED)?;
    let shoff = usize_at(40).ok_or(TRUNCATED)?;
    let phentsize = usize::from(u16_at(54).ok_or(TRUNCATED)?);
    let phnum = usize::from(u16_at(56).ok_or(TRUNCATED)?);
    let shentsize = usize::from(u16_at(58).ok_or(TRUNCATED)?);
    let shnum = usize::from(u16_at(60).ok_or(TRUNCATED)?);
    let shstrndx = usize::from(u16_at(62).ok_or(TRUNCATED)?);

    let mut segments = Vec::new();
    for i in 0..phnum {
        let base = phoff + i * phentsize;
        if u32_at(base).ok_or("truncated program headers")? != PT_LOAD {
            continue;
        }
        let field = |o: usize| u64_at(base + o).ok_or("truncated program headers");
        segments.push(Segment {
            offset: field(8)?,
            vaddr: field(16)?,
            paddr: field(24)?,
            filesz: field(32)?,
            memsz: field(40)?,
        });
    }

    let mut sections = Vec::new();
    if shnum > 0 && shoff > 0 {
        let header = |i: usize| -> Option<(usize, usize, usize)> {
            let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
            let name = usize::try_from(u32_at(base)?).ok()?;
            Some((name, usize_at(base + 0x18)?, usize_at(base + 0x20)?))
        };
        let (_, str_off, str_size) = header(shstrndx).ok_or("truncated section headers")?;
        let names = elf
            .get(str_off..str_off.saturating_add(str_size))
            .ok_or("truncated section names")?;
        for i in 0..shnum {
            let (name, _, _) = header(i).ok_or("truncated section headers")?;
            let rest = names.get(name..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            sections.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }
    Ok(ElfInfo {
        elf_type,
        machine,
        entry,
        segments,
        sections,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::tests::fake_bzimage;

    /// A minimal x86_64 ET_EXEC with one PT_LOAD covering its entry point
    /// and a `Linux version` banner.
    pub(crate) fn fake_vmlinux(release: &str) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[24..32].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        elf[ph + 16..ph + 24].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
        elf[ph + 24..ph + 32].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&0x1000u64.to_le_bytes());
        elf[ph + 40..ph + 48].copy_from_slice(&0x1000u64.to_le_bytes());
        elf.extend_from_slice(format!("Linux version {release} (t@t) #1 SMP\0").as_bytes());
        elf.resize(0x1000, 0);
        elf
    }

    /// A bzImage whose header points at `payload`.
    pub(crate) fn bzimage_with_payload(release: &str, payload: &[u8]) -> Vec<u8> {
        let mut img = fake_bzimage(release);
        img[0x1F1] = 4;
        img[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        let start = 5 * 512;
        let offset = img.len() - start;
        img[0x248..0x24C].copy_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
        img[0x24C..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, data).unwrap();
        gz.finish().unwrap()
    }

    fn lz4_legacy_stream(data: &[u8]) -> Vec<u8> {
        let mut out = 0x184C_2102u32.to_le_bytes().to_vec();
        for chunk in data.chunks(8 << 20) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn every_supported_codec_round_trips() {
        let elf = fake_vmlinux("6.6.6-t");
        let size = u32::try_from(elf.len()).unwrap().to_le_bytes();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            io::Write::write_all(&mut e, &elf).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&elf[..], 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, mut payload) in [
            ("gzip", gzip(&elf)),
            ("xz", xz),
            ("zstd", zst),
            ("lz4", lz4_legacy_stream(&elf)),
        ] {
            // As the kernel's build does: the size follows the stream.
            payload.extend_from_slice(&size);
            let src = dir.path().join(format!("{name}.bz"));
            fs::write(&src, bzimage_with_payload("6.6.6-t", &payload)).unwrap();
            let out = dir.path().join(format!("{name}.elf"));
            let (codec, info) = extract_vmlinux(&src, &out).unwrap();
            assert_eq!(codec.as_str(), name);
            assert_eq!(fs::read(&out).unwrap(), elf, "{name}");
            assert!(info.is_bootable_x86_64(), "{name}: {info:?}");
        }
    }

    #[test]
    fn header_less_images_are_scanned() {
        let elf = fake_vmlinux("6.6.6-t");
        // Garbage that looks like a gzip start, then the real stream.
        let mut img = fake_bzimage("6.6.6-t");
        img.extend_from_slice(b"\x1f\x8b\x08junk");
        img.extend_from_slice(&gzip(&elf));
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bz");
        fs::write(&src, img).unwrap();
        let (codec, _) = extract_vmlinux(&src, &dir.path().join("out")).unwrap();
        assert_eq!(codec, Compression::Gzip);
    }

    #[test]
    fn bad_payloads_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        for (name, payload) in [
            ("not-elf", gzip(b"hello, not a kernel")),
            ("bzip2", b"BZh91AY&SY".to_vec()),
            ("noise", vec![0xA5; 64]),
        ] {
            let src = dir.path().join(name);
            fs::write(&src, bzimage_with_payload("6.6.6", &payload)).unwrap();
            let err = extract_vmlinux(&src, &out).unwrap_err();
            assert!(
                matches!(err, KernelError::NotAKernel { .. }),
                "{name}: {err:?}"
            );
            assert!(!out.exists(), "{name}");
        }
        let src = dir.path().join("bzip2");
        let msg = extract_vmlinux(&src, &out).unwrap_err().to_string();
        assert!(msg.contains("bzip2 kernels are not supported"), "{msg}");
    }

    #[test]
    fn elf_checks() {
        let mut elf = fake_vmlinux("6.6.6");
        let info = parse_elf(&elf).unwrap();
        assert!(info.is_bootable_x86_64());
        // An entry point outside every loaded segment.
        elf[24..32].copy_from_slice(&0x10u64.to_le_bytes());
        assert!(!parse_elf(&elf).unwrap().entry_is_loaded());
        elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        assert!(!parse_elf(&elf).unwrap().is_bootable_x86_64());
        assert_eq!(
            parse_elf(b"\x7fELF\x01\x01"),
            Err("not a little-endian 64-bit ELF")
        );
    }
}
