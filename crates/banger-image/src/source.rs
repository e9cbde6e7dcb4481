//! Recognising an import source by its content: a directory, or a tar
//! stream that is plain, gzip or zstd compressed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::ImageError;

/// How a tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Classify the first bytes of a file. `None` if it is not a supported
/// archive. A plain tar is recognised by its `ustar` magic at offset 257.
pub fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// Read the head of `path` and classify it.
pub fn detect(path: &Path) -> Result<Compression, ImageError> {
    let mut file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io("read", path, e)),
        }
    }
    sniff(&head[..filled]).ok_or_else(|| ImageError::UnsupportedFormat {
        path: path.to_path_buf(),
    })
}

/// Wrap a reader positioned at the start of a tarball in the decoder its
/// compression needs. `path` only names the source in errors.
pub fn decompressed<'a>(
    reader: impl Read + 'a,
    compression: Compression,
    path: &Path,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    Ok(match compression {
        Compression::None => Box::new(BufReader::new(reader)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| ImageError::io("start zstd decoder for", path, e))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Some(Compression::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Compression::Zstd));
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar), Some(Compression::None));
        assert_eq!(sniff(b"#!/bin/sh\necho not a tarball\n"), None);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), None);
    }
}
