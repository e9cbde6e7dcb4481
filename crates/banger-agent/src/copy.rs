//! `copy_in` / `copy_out`: tar streams into and out of the guest, for
//! `vm cp` and workspaces.
//!
//! Both ends stream: the archive is read from (or written to) the stream's
//! window-sized queue, never held whole, so a copy of any size takes a
//! window of agent memory. As root in the guest, modes (setuid included),
//! owners, symlinks and mtimes are kept. Unpacking goes through the tar
//! crate's `unpack`, which refuses entries that would land outside `dest`
//! (`..` components, absolute names, paths through symlinks that lead out).
//! A copy in lands whole or not at all: it is unpacked into a staging
//! directory inside the destination and moved into place at the end
//! (`banger_proto::land`), so a stream that breaks off changes nothing.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use banger_proto::Message;
use banger_proto::flow::MAX_CHUNK;
use banger_proto::land;

use crate::streams::{self, FrameWriter, InputReader, Stream, reply};

/// An error and its causes on one line: the tar crate puts the entry's
/// path in the outer error and the reason (`Permission denied`, `No space
/// left on device`) in its source.
fn chain(e: &io::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = e.get_ref().and_then(|inner| inner.source());
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn fail(st: &Stream, message: String) {
    streams::forget(&st.table, st.id);
    reply(&st.sink, st.id, Message::Error { message });
}

/// The first of `dir` and its ancestors that does not exist: what
/// `create_dir_all(dir)` would make, and what a failed copy removes.
fn first_missing(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if fs::symlink_metadata(p).is_ok() {
            break;
        }
        missing = Some(p.to_path_buf());
        cur = p.parent();
    }
    missing
}

/// Unpacks the tar arriving on the stream under `dest`, whole or not at
/// all: into a staging directory there, landed only once the archive has
/// all arrived (`banger_proto::land`).
pub fn copy_in(st: Stream, dest: &str) {
    let dir = Path::new(dest);
    if !dir.is_absolute() {
        return fail(&st, format!("copy into {dest}: not an absolute path"));
    }
    let made = first_missing(dir);
    let undo = |made: &Option<PathBuf>| {
        if let Some(m) = made {
            let _ = fs::remove_dir_all(m);
        }
    };
    if let Err(e) = fs::create_dir_all(dir) {
        undo(&made);
        return fail(&st, format!("copy into {dest}: {e}"));
    }
    if !dir.is_dir() {
        return fail(&st, format!("copy into {dest}: not a directory"));
    }
    let staging = match land::staging_dir(dir) {
        Ok(s) => s,
        Err(e) => {
            undo(&made);
            return fail(&st, format!("copy into {dest}: {e}"));
        }
    };
    reply(&st.sink, st.id, Message::Opened);
    let (rx, st) = st.take_input();
    let mut reader = InputReader {
        id: st.id,
        sink: &st.sink,
        flow: &st.flow,
        rx,
        chunk: Vec::new(),
        pos: 0,
    };
    let outcome = {
        let mut ar = tar::Archive::new(&mut reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        unpack(&mut ar, &staging)
    };
    let outcome = outcome.and_then(|()| land::land(&staging, dir));
    match outcome {
        Ok(()) => {
            // The end-of-archive blocks are read; drain the tail so the
            // host's last writes are credited and its close arrives.
            let _ = io::copy(&mut reader, &mut io::sink());
            drop(reader);
            streams::forget(&st.table, st.id);
            reply(&st.sink, st.id, Message::Done);
        }
        Err(e) => {
            drop(reader);
            // Nothing of a copy that did not arrive whole stays.
            let _ = fs::remove_dir_all(&staging);
            undo(&made);
            fail(&st, format!("copy into {dest}: {}", chain(&e)));
        }
    }
}

/// `Archive::unpack`, except that an entry the tar crate refuses to place
/// (a `..` in its name) is an error naming it rather than silently
/// skipped. Directories come last, deepest first, as there, so a read-only
/// directory does not stop its own contents and its mtime sticks.
fn unpack<R: io::Read>(ar: &mut tar::Archive<R>, dir: &Path) -> io::Result<()> {
    let dir = dir.canonicalize()?;
    let refuse = |e: &tar::Entry<'_, R>| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "entry {} would land outside {}",
                String::from_utf8_lossy(&e.path_bytes()),
                dir.display()
            ),
        )
    };
    let mut dirs = Vec::new();
    for entry in ar.entries()? {
        let mut e = entry?;
        if e.header().entry_type() == tar::EntryType::Directory {
            dirs.push(e);
        } else if !e.unpack_in(&dir)? {
            return Err(refuse(&e));
        }
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        if !d.unpack_in(&dir)? {
            return Err(refuse(&d));
        }
        // The tar crate keeps a directory's mode and owner but not its
        // mtime; nothing is written into it after this point.
        let target = dir.join(&*d.path()?);
        let mtime = d.header().mtime()?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        fs::File::open(&target)
            .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t)))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", target.display())))?;
    }
    Ok(())
}

/// Sends a tar of `path`; its top entry is `path`'s last component. With
/// `one_file_system`, a directory on another device than `path` (a mount
/// point) is sent without its contents, as `tar --one-file-system` does.
pub fn copy_out(st: Stream, path: &str, one_file_system: bool) {
    let src = Path::new(path);
    if !src.is_absolute() {
        return fail(&st, format!("copy from {path}: not an absolute path"));
    }
    let device = match fs::symlink_metadata(src) {
        Ok(m) => one_file_system.then(|| std::os::unix::fs::MetadataExt::dev(&m)),
        Err(e) => return fail(&st, format!("copy from {path}: {e}")),
    };
    let name = src
        .file_name()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    reply(&st.sink, st.id, Message::Opened);
    let w = BufWriter::with_capacity(
        MAX_CHUNK,
        FrameWriter {
            id: st.id,
            sink: &st.sink,
            flow: &st.flow,
        },
    );
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let outcome = add(&mut b, src, &name, device).and_then(|()| {
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| format!("copy from {path}: {}", chain(&e)))
    });
    match outcome {
        Ok(()) => {
            streams::forget(&st.table, st.id);
            reply(&st.sink, st.id, Message::Eof);
            reply(&st.sink, st.id, Message::Done);
        }
        Err(message) => fail(&st, message),
    }
}

/// Appends `src` as `name`, and a directory's entries after it, in name
/// order; with `device`, only a directory on that device is descended into.
/// Walked here rather than with `append_dir_all` so an error names the file
/// it is about. Only directories are compared: overlayfs reports the
/// device of the layer a non-directory comes from, never a mount point.
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    device: Option<u64>,
) -> Result<(), String> {
    let at = |e: io::Error| format!("copy from {}: {}", src.display(), chain(&e));
    let meta = fs::symlink_metadata(src).map_err(at)?;
    let ft = meta.file_type();
    // A socket has no tar representation; skipping it is what tar(1) does.
    if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
        return Ok(());
    }
    b.append_path_with_name(src, name).map_err(at)?;
    let other_fs = device.is_some_and(|d| d != std::os::unix::fs::MetadataExt::dev(&meta));
    if ft.is_dir() && !other_fs {
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(at)?
            .collect::<Result<_, _>>()
            .map_err(at)?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            add(b, &e.path(), &name.join(e.file_name()), device)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use banger_proto::{Frame, FrameKind, read_frame};

    use crate::flow::Flow;
    use crate::streams::{StreamCtl, Table};
    use crate::transport::Sink;

    /// A sink whose frames land in a buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stream(buf: &Buf, flow_control: bool) -> (Stream, mpsc::Sender<Option<Vec<u8>>>) {
        let sink = Arc::new(Sink::new(
            Box::new(buf.clone()),
            Arc::new(AtomicBool::new(true)),
        ));
        let table = Table::default();
        let flow = Arc::new(Flow::new(flow_control));
        let (tx, rx) = mpsc::channel();
        streams::lock(&table).insert(
            1,
            StreamCtl {
                flow: flow.clone(),
                input: None,
                pid: None,
                pty: None,
                on_abort: None,
            },
        );
        (
            Stream {
                id: 1,
                sink,
                table,
                flow,
                input: rx,
            },
            tx,
        )
    }

    fn frames(buf: &Buf) -> Vec<Frame> {
        let bytes = buf.0.lock().unwrap().clone();
        let mut cur = io::Cursor::new(bytes);
        let mut out = Vec::new();
        while let Some(f) = read_frame(&mut cur).unwrap() {
            out.push(f);
        }
        out
    }

    fn last_message(buf: &Buf) -> Message {
        frames(buf)
            .into_iter()
            .rev()
            .find_map(|f| match f {
                Frame::Control { message, .. } if !matches!(message, Message::Credit { .. }) => {
                    Some(message)
                }
                _ => None,
            })
            .unwrap()
    }

    fn unpack(tar_bytes: Vec<u8>, dest: &Path) -> Message {
        let buf = Buf::default();
        let (st, tx) = stream(&buf, false);
        for chunk in tar_bytes.chunks(1000) {
            tx.send(Some(chunk.to_vec())).unwrap();
        }
        tx.send(None).unwrap();
        copy_in(st, dest.to_str().unwrap());
        last_message(&buf)
    }

    #[test]
    fn copy_out_then_in_keeps_modes_links_and_mtimes() {
        let src = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("secret"), "s").unwrap();
        fs::set_permissions(tree.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(tree.join("sub/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(tree.join("sub/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("../secret", tree.join("sub/link")).unwrap();
        fs::File::open(tree.join("sub"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        let mtime = filetime_of(&tree.join("secret"));

        let buf = Buf::default();
        let (st, _tx) = stream(&buf, false);
        copy_out(st, tree.to_str().unwrap(), false);
        let mut archive = Vec::new();
        for f in frames(&buf) {
            if let Frame::Data {
                kind: FrameKind::Stdout,
                data,
                ..
            } = f
            {
                archive.extend_from_slice(&data);
            }
        }
        assert_eq!(last_message(&buf), Message::Done);

        let dst = tempfile::tempdir().unwrap();
        assert_eq!(unpack(archive, dst.path()), Message::Done);
        let out = dst.path().join("tree");
        assert_eq!(fs::read_to_string(out.join("secret")).unwrap(), "s");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&out.join("secret")), 0o600);
        assert_eq!(mode(&out.join("sub/tool")), 0o4755, "setuid kept");
        assert_eq!(
            fs::read_link(out.join("sub/link")).unwrap(),
            Path::new("../secret")
        );
        assert_eq!(filetime_of(&out.join("secret")), mtime);
        assert_eq!(
            filetime_of(&out.join("sub")),
            filetime_of(&tree.join("sub"))
        );
    }

    fn filetime_of(p: &Path) -> i64 {
        fs::symlink_metadata(p).unwrap().mtime()
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file_header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    #[test]
    fn entries_cannot_escape_dest() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        // `..` in a name.
        let evil = tar_of(|b| {
            let mut h = file_header(1);
            // set_path refuses `..`; write the raw name as an attacker would.
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        });
        let m = unpack(evil, &dest);
        assert!(
            matches!(&m, Message::Error { message } if message.contains("../escape")),
            "{m:?}"
        );
        assert!(!root.path().join("escape").exists());

        // A symlink out of dest, then a file written through it.
        let evil = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "out", root.path()).unwrap();
            let mut h = file_header(1);
            b.append_data(&mut h, "out/owned", &b"x"[..]).unwrap();
        });
        let m = unpack(evil, &dest);
        assert!(matches!(m, Message::Error { .. }), "{m:?}");
        assert!(
            !root.path().join("owned").exists(),
            "wrote through a symlink out of dest"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let buf = Buf::default();
        let (st, _tx) = stream(&buf, false);
        copy_out(st, "/no/such/thing", false);
        let m = last_message(&buf);
        assert!(
            matches!(&m, Message::Error { message } if message.contains("/no/such/thing")),
            "{m:?}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let buf = Buf::default();
        let (st, _tx) = stream(&buf, false);
        copy_in(st, file.path().to_str().unwrap());
        let m = last_message(&buf);
        assert!(
            matches!(&m, Message::Error { message } if message.contains(file.path().to_str().unwrap())),
            "{m:?}"
        );
    }
}
