//! `image import` and `kernel import` when the daemon is on another host:
//! it cannot read this host's paths, so the files travel as the request
//! body (`POST /v1/images/upload`, `/v1/kernels/upload`), streamed from a
//! blocking thread through a [`crate::pipe`] of a few chunks, whatever the
//! size. A local daemon keeps reading the path itself (no copy at all).
//!
//! An image directory goes as a tar (owners, modes, devices, symlinks and
//! hard links kept, as a local import keeps them); a tarball goes as it
//! is on disk (the daemon reads `.tar`, `.tar.gz` and `.tar.zst` alike);
//! a kernel goes as a tar of `kernel` and optionally `initrd`. A file that
//! cannot be read ends the body with an error, so the daemon never takes
//! a cut stream as whole.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use banger_api::endpoints::{ImagesUpload, KernelsUpload};
use banger_api::{Event, ImageRecord, ImageUploadQuery, KernelRecord, KernelUploadQuery};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::output::Progress;
use crate::pipe::{ChanBody, ChanWriter, DEPTH};

type Producer = Box<dyn FnOnce(&mut ChanWriter) -> Result<(), String> + Send>;

/// Send what `produce` writes as the body of `E`, showing progress; the
/// producer's own error wins over the broken request it causes.
async fn send<E>(
    c: &Client,
    query: &E::Query,
    what: String,
    produce: Producer,
) -> Result<E::Response>
where
    E: banger_api::Endpoint,
{
    let p = Progress::new();
    p.event(&Event::Stage {
        stage: "upload".into(),
        detail: what,
    });
    let (tx, rx) = mpsc::channel(DEPTH);
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = ChanWriter::new(tx);
        let outcome = produce(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(message) = &outcome {
            w.fail(io::Error::other(message.clone()));
        }
        outcome
    });
    let result = c
        .stream_tar::<E, _>(&[], query, ChanBody(rx), |e| p.event(e))
        .await;
    drop(p);
    // A source that failed is why the upload broke, unless the way to the
    // daemon broke first.
    let transport =
        matches!(&result, Err(e) if e.downcast_ref::<crate::client::ssh::SshFailure>().is_some());
    if !transport
        && writer.is_finished()
        && let Ok(Err(message)) = writer.await
    {
        bail!(message);
    }
    result
}

/// Import `path` (a root filesystem directory or tarball on this host) as
/// image `name` of the daemon `c` on another host.
pub async fn image(c: &Client, path: &Path, name: &str) -> Result<ImageRecord> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = crate::input::absolute(path)?;
    let host = c.describe();
    let source = path.to_path_buf();
    let (directory, produce): (bool, Producer) = if meta.is_dir() {
        (true, Box::new(move |w| tar_dir(w, &source)))
    } else if meta.is_file() {
        let produce = move |w: &mut ChanWriter| {
            let mut f =
                fs::File::open(&source).map_err(|e| format!("{}: {e}", source.display()))?;
            io::copy(&mut f, w)
                .map(drop)
                .map_err(|e| format!("{}: {e}", source.display()))
        };
        (false, Box::new(produce))
    } else {
        bail!("{} is neither a directory nor a tarball", path.display());
    };
    let query = ImageUploadQuery {
        name: name.to_string(),
        source: Some(shown.clone()),
        directory,
    };
    send::<ImagesUpload>(c, &query, format!("sending {shown} to {host}"), produce).await
}

/// Import a kernel file (or a `linux-image-*.deb` with `deb`) and optional
/// initrd from this host into the daemon `c` on another host.
pub async fn kernel(
    c: &Client,
    path: &Path,
    initrd: Option<&Path>,
    name: Option<String>,
    deb: bool,
) -> Result<KernelRecord> {
    let files: Vec<(&'static str, PathBuf)> = std::iter::once(("kernel", path.to_path_buf()))
        .chain(initrd.map(|i| ("initrd", i.to_path_buf())))
        .collect();
    for (_, f) in &files {
        let meta = fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", f.display());
        }
    }
    let produce = move |w: &mut ChanWriter| -> Result<(), String> {
        let mut b = tar::Builder::new(w);
        for (entry, f) in &files {
            let mut file = fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
            b.append_file(entry, &mut file)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
        b.finish().map_err(|e| e.to_string())
    };
    let query = KernelUploadQuery { name, deb };
    let what = format!("sending {} to {}", path.display(), c.describe());
    send::<KernelsUpload>(c, &query, what, Box::new(produce)).await
}

/// A tar of the tree under `root` (its entries at the top), hard links
/// kept as links to the first path of each inode.
fn tar_dir(w: &mut ChanWriter, root: &Path) -> Result<(), String> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut seen = HashMap::new();
    add_children(&mut b, root, Path::new(""), &mut seen)?;
    b.finish().map_err(|e| format!("{}: {e}", root.display()))
}

fn add_children<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), String> {
    let at = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| at(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(dir, e))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        let name = rel.join(e.file_name());
        let meta = fs::symlink_metadata(&path).map_err(|e| at(&path, e))?;
        let ft = meta.file_type();
        if ft.is_socket() {
            continue;
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = seen.get(&key) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &name, first)
                    .map_err(|e| at(&path, e))?;
                continue;
            }
            seen.insert(key, name.clone());
        }
        b.append_path_with_name(&path, &name)
            .map_err(|e| at(&path, e))?;
        if ft.is_dir() {
            add_children(b, &path, &name, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_tars_keep_hard_links_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        tree(&root);
        let (tx, mut rx) = mpsc::channel(64);
        let t = std::thread::spawn(move || {
            let mut w = ChanWriter::new(tx);
            tar_dir(&mut w, &root).unwrap();
            w.flush().unwrap();
        });
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        t.join().unwrap();
        let mut ar = tar::Archive::new(io::Cursor::new(bytes));
        let mut kinds = HashMap::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            kinds.insert(name, (e.header().entry_type(), link));
        }
        assert_eq!(kinds["bin/tool"].0, tar::EntryType::Regular);
        assert_eq!(
            kinds["bin/tool-hard"],
            (tar::EntryType::Link, Some("bin/tool".into()))
        );
        assert_eq!(
            kinds["bin/tool-link"],
            (tar::EntryType::Symlink, Some("tool".into()))
        );
        assert_eq!(kinds["etc"].0, tar::EntryType::Directory);
    }

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs::hard_link(root.join("bin/tool"), root.join("bin/tool-hard")).unwrap();
        std::os::unix::fs::symlink("tool", root.join("bin/tool-link")).unwrap();
    }
}
