//! `image commit`: a new image from a running VM, like `docker commit`.
//!
//! The guest agent streams the VM's root filesystem as the guest sees it
//! (the read-only base with the overlay over it) and then its work disk
//! (`/root`), each staying on its own filesystem, so /proc, /sys, /dev,
//! /run, /tmp and the kernel's modules disk come as empty directories. The
//! daemon filters the two tars into one tarball in scratch and imports that
//! the way `image import ROOTFS.tar` does (the `banger-rootfs` worker under
//! fakeroot, `mkfs.ext4 -d`): nothing is mounted on the host and nothing
//! runs as root. `/root` of the tarball becomes the work seed.
//!
//! Left out: the files banger stages per VM (hostname, hosts, resolver,
//! network unit, sshd drop-in, the VM's host key) and the machine id the
//! guest's init made, which describe that VM and not the image; the
//! parent image's own versions of them are put back. Also `/root/.ssh/
//! authorized_keys`, which every VM gets anew. The VM is not paused: the
//! agent reads through the guest's page cache, so what was written is what
//! is seen, but a file being written during the commit may be caught half
//! written (as `docker commit --pause=false`).
//!
//! The guest is not trusted: entry names that leave the root are refused
//! here, the tarball is unpacked by the same strictly contained worker as
//! any imported tarball (no write through a link, hard links only inside
//! the tree, everything under fakeroot), and the streams stop at what the
//! VM's disks can hold. The VM's lock is held while they stream, but a
//! `vm kill` or `vm rm -f` kills the VMM first, which ends the streams.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use banger_api::{ImageCommitRequest, ImageRecord, ImageSource, VmRecord, VmState, validate};
use banger_proto::client::{ByteStream, ClientError, DataRx};

use super::{ImageService, import_error_kind, import_event, remove_in_background};
use crate::Services;
use crate::error::{CoreError, CoreResult, classify, internal, store_err};
use crate::events::{EventSink, stage};
use crate::scratch::{Scratch, remove_any};
use crate::{alloc, guest_files, now_rfc3339};

/// Directories whose contents belong to the running system, never to an
/// image (they are mount points in a banger guest; this also covers a
/// guest that unmounted one).
const RUNTIME_DIRS: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];

/// Made by the guest's init at first boot; a copy in an image would give
/// every VM made from it one identity.
const MACHINE_ID: &str = "etc/machine-id";

/// Written into every new VM's work disk (the managed user key).
const AUTHORIZED_KEYS: &str = "root/.ssh/authorized_keys";

/// e2fsck's directory at the root of every ext4 (the base, the work disk).
const LOST_FOUND: &str = "lost+found";

impl Services {
    /// Build image `req.name` from the running VM `req.vm`. Holds the VM's
    /// lock while its files stream (it cannot be stopped or removed under
    /// the commit), not while the image is built.
    pub async fn commit_image(
        &self,
        req: &ImageCommitRequest,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        validate::artifact_name(&req.name, "image name").map_err(CoreError::invalid)?;
        let (vm, guard) = self.awake_vm(&req.vm).await?;
        self.images.refuse_taken(&req.name)?;
        if vm.desired_state != VmState::Running
            || tokio::task::block_in_place(|| self.boot.live_handles(&vm)).is_none()
        {
            return Err(CoreError::conflict(format!(
                "vm {} is not running; image commit reads its files through the guest agent: \
                 start it with `banger vm start {}` first",
                vm.name, vm.name
            )));
        }
        let parent = self.images.get(&vm.image_id)?;
        let scratch = Scratch::new(&self.layout, "commit")
            .map_err(|e| internal("create a scratch directory", &e))?;
        let tarball = scratch.path().join("rootfs.tar");
        let file = std::fs::File::create(&tarball)
            .map_err(|e| internal(&format!("create {}", tarball.display()), &e))?;
        let mut out = tar::Builder::new(BufWriter::new(file));
        // The guest is not trusted to send only what its disks hold: the
        // streams stop at their size (the parent's tree, the overlay and
        // the work disk, all at their full sizes), so a hostile agent
        // cannot fill the host's disk through a commit.
        let budget = Arc::new(AtomicU64::new(
            parent
                .size_bytes
                .saturating_add(vm.spec.overlay_disk_bytes)
                .saturating_add(vm.spec.work_disk_bytes),
        ));

        stage(
            events,
            "read_root",
            format!("reading the root filesystem of {}", vm.name),
        );
        let agent = self.boot.agent(&vm).await?;
        let root = match agent.copy_out_one_fs("/").await {
            Err(ClientError::Closed | ClientError::Io { .. }) => {
                // The cached connection went stale; one fresh try.
                self.boot.forget_agent(&vm).await;
                self.boot.agent(&vm).await?.copy_out_one_fs("/").await
            }
            other => other,
        }
        .map_err(|e| agent_error(&vm.name, "/", e))?;
        out = pump(root, out, &vm.name, "/", keep_root, &budget).await?;
        let base = PathBuf::from(&parent.base_path);
        out = tokio::task::spawn_blocking(move || {
            let added = add_parent_identity(&mut out, &base);
            added.map(|()| out)
        })
        .await
        .map_err(|e| CoreError::internal(format!("commit worker panicked: {e}")))?
        .map_err(|e| internal("write the commit tarball", &e))?;

        stage(events, "read_work", "reading /root (the work disk)");
        let work = self
            .boot
            .agent(&vm)
            .await?
            .copy_out_one_fs("/root")
            .await
            .map_err(|e| agent_error(&vm.name, "/root", e))?;
        out = pump(work, out, &vm.name, "/root", keep_work, &budget).await?;
        tokio::task::block_in_place(|| {
            out.into_inner()
                .and_then(|mut w| w.flush())
                .map_err(|e| internal("write the commit tarball", &e))
        })?;
        drop(guard);

        tokio::task::block_in_place(|| {
            self.images
                .publish_commit(&req.name, &tarball, &parent, &vm, events)
        })
    }
}

impl ImageService {
    /// A clear refusal before anything is streamed; checked again under
    /// the registry lock when the image is recorded.
    fn refuse_taken(&self, name: &str) -> CoreResult<()> {
        if self.list()?.iter().any(|i| i.name == name) {
            return Err(CoreError::conflict(format!(
                "an image named {name:?} exists already"
            )));
        }
        Ok(())
    }

    /// Build and record image `name` from the commit tarball of `vm`.
    fn publish_commit(
        &self,
        name: &str,
        tarball: &Path,
        parent: &ImageRecord,
        vm: &VmRecord,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.refuse_taken(name)?;
        let id = alloc::new_id();
        let dest = self.layout.image_dir(&id);
        stage(events, "import_image", format!("building image {name}"));
        let mut on_event = |ev: banger_image::ImportEvent| events(import_event(ev));
        let imported =
            banger_image::import_rootfs(tarball, &dest, &self.tools.rootfs_worker, &mut on_event)
                .map_err(|e| classify(&e, import_error_kind(&e), &self.layout.images_dir()))?;
        let record = ImageRecord {
            id,
            name: name.to_string(),
            source: ImageSource::Commit {
                vm_id: vm.id.clone(),
                vm_name: vm.name.clone(),
                parent_image_id: parent.id.clone(),
                parent_image_name: parent.name.clone(),
            },
            base_path: imported.base_path.display().to_string(),
            work_seed_path: imported.work_seed_dir.display().to_string(),
            size_bytes: imported.size_bytes,
            has_init: imported.has_init,
            // What `vm run` honours (entrypoint, env...) is the parent's:
            // the commit changed files, not how the image is run.
            config: parent.config.clone(),
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_image(&record) {
            remove_any(&dest);
            return Err(store_err(e));
        }
        remove_in_background(imported.scratch);
        Ok(record)
    }
}

fn agent_error(vm: &str, path: &str, e: ClientError) -> CoreError {
    match e {
        ClientError::Unsupported { .. } => CoreError::conflict(format!("vm {vm}: {e}")),
        other => CoreError::internal(format!(
            "vm {vm}: reading {path} through the guest agent: {other}"
        )),
    }
}

/// Copy the tar the agent streams on `stream` into `out`, keeping the
/// entries `keep` accepts. A failure of the agent is reported as the
/// agent's error; a failure here aborts the guest's side.
async fn pump<W: Write + Send + 'static>(
    mut stream: ByteStream,
    mut out: tar::Builder<W>,
    vm: &str,
    path: &str,
    keep: fn(&str) -> bool,
    budget: &Arc<AtomicU64>,
) -> CoreResult<tar::Builder<W>> {
    let rx = stream
        .reader()
        .ok_or_else(|| CoreError::internal("copy stream without a reader"))?;
    let ended = Arc::new(AtomicBool::new(false));
    let reader = StreamReader {
        rx,
        rt: tokio::runtime::Handle::current(),
        chunk: Vec::new(),
        pos: 0,
        ended: ended.clone(),
        budget: budget.clone(),
    };
    let (out_back, copied) = tokio::task::spawn_blocking(move || {
        let copied = copy_entries(reader, &mut out, keep);
        (out, copied)
    })
    .await
    .map_err(|e| CoreError::internal(format!("commit worker panicked: {e}")))?;
    out = out_back;
    match copied {
        Ok(()) => stream
            .finish()
            .await
            .map_err(|e| agent_error(vm, path, e))?,
        // The stream ended early: the agent says why.
        Err(e) if ended.load(Ordering::Relaxed) => {
            stream
                .finish()
                .await
                .map_err(|e| agent_error(vm, path, e))?;
            return Err(CoreError::internal(format!(
                "vm {vm}: the tar of {path} is cut short: {e}"
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            stream.abort();
            return Err(CoreError::invalid(format!(
                "vm {vm}: the guest sent more for {path} than its disks can hold; refused"
            )));
        }
        Err(e) => {
            stream.abort();
            return Err(internal("write the commit tarball", &e));
        }
    }
    Ok(out)
}

/// The agent's bytes as a blocking `Read`, for the tar crate, on a thread
/// of the blocking pool (where `block_on` is allowed).
struct StreamReader {
    rx: DataRx,
    rt: tokio::runtime::Handle,
    chunk: Vec<u8>,
    pos: usize,
    ended: Arc<AtomicBool>,
    /// Bytes the guest may still send, shared by the commit's streams.
    budget: Arc<AtomicU64>,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rt.block_on(self.rx.recv()) {
                Some(c) => {
                    let n = c.len() as u64;
                    let left = self.budget.load(Ordering::Relaxed);
                    if n > left {
                        return Err(io::Error::new(
                            io::ErrorKind::FileTooLarge,
                            "the guest sent more than its disks hold",
                        ));
                    }
                    self.budget.store(left - n, Ordering::Relaxed);
                    self.chunk = c;
                    self.pos = 0;
                }
                None => {
                    self.ended.store(true, Ordering::Relaxed);
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `./etc/hosts` -> `etc/hosts`; `None` for the root itself. A name that
/// climbs out (`..`, absolute) is an error: the agent never sends one.
fn relative(path: &Path) -> io::Result<Option<String>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 entry name")
            })?),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry {} leaves the root", path.display()),
                ));
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Re-append every entry of `src` that `keep` accepts, under its relative
/// name, with its header (mode, owner, mtime, type) as the guest sent it.
fn copy_entries<R: Read, W: Write>(
    src: R,
    out: &mut tar::Builder<W>,
    keep: fn(&str) -> bool,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(src);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(rel) = relative(&entry.path()?)? else {
            continue;
        };
        if !keep(&rel) {
            continue;
        }
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name()?.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{rel}: link without target"),
                    )
                })?;
                let target = target.into_owned();
                out.append_link(&mut header, &rel, target)?;
            }
            _ => out.append_data(&mut header, &rel, &mut entry)?,
        }
    }
    Ok(())
}

/// What of the root stream goes into the image (see the module doc).
fn keep_root(rel: &str) -> bool {
    let under = |dir: &str| rel == dir || rel.starts_with(&format!("{dir}/"));
    // lost+found is the ext4's own; mkfs makes the new image's.
    if under("root") || rel == MACHINE_ID || under(LOST_FOUND) {
        return false;
    }
    if RUNTIME_DIRS
        .iter()
        .any(|d| rel.starts_with(&format!("{d}/")))
    {
        return false;
    }
    !guest_files::staged_paths().iter().any(|p| p == rel)
}

/// What of the work-disk stream goes into the image: all of `/root` but
/// the managed key.
fn keep_work(rel: &str) -> bool {
    let lost = format!("root/{LOST_FOUND}");
    (rel == "root" || rel.starts_with("root/"))
        && rel != AUTHORIZED_KEYS
        && rel != lost
        && !rel.starts_with(&format!("{lost}/"))
}

/// Put back the parent image's own versions of the per-VM files left out
/// of the root stream (regular files and symlinks; absent ones stay absent).
fn add_parent_identity<W: Write>(out: &mut tar::Builder<W>, base: &Path) -> io::Result<()> {
    let mut paths = guest_files::staged_paths();
    paths.push(MACHINE_ID.to_string());
    // debugfs's stat gives no mtime worth keeping; the commit's will do.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for rel in paths {
        let guest = format!("/{rel}");
        let Ok(st) = banger_disk::stat(base, &guest) else {
            continue;
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.perm);
        header.set_uid(u64::from(st.uid));
        header.set_gid(u64::from(st.gid));
        header.set_mtime(now);
        match st.kind {
            banger_disk::FileKind::Regular => {
                let data = banger_disk::read_file(base, &guest).map_err(io::Error::other)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                out.append_data(&mut header, &rel, data.as_slice())?;
            }
            banger_disk::FileKind::Symlink => {
                let target = st.symlink_target.unwrap_or_default();
                let target = String::from_utf8_lossy(&target).into_owned();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                out.append_link(&mut header, &rel, target)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_stream_keeps_the_image_and_drops_the_vm() {
        for kept in [
            "usr/local/bin/hello",
            "etc/motd",
            "proc",
            "tmp",
            "run",
            "dev",
            "etc/ssh/sshd_config",
            "rootfs",
        ] {
            assert!(keep_root(kept), "{kept}");
        }
        for dropped in [
            "root",
            "root/note",
            "proc/1/status",
            "tmp/x",
            "run/banger/base",
            "dev/null",
            "etc/hostname",
            "etc/hosts",
            "etc/resolv.conf",
            "etc/machine-id",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/sshd_config.d/99-banger.conf",
            "etc/systemd/network/10-banger.network",
        ] {
            assert!(!keep_root(dropped), "{dropped}");
        }
        assert!(keep_work("root"));
        assert!(keep_work("root/note"));
        assert!(keep_work("root/.ssh/config"));
        assert!(!keep_work("root/.ssh/authorized_keys"));
        assert!(!keep_work("root/lost+found"));
        assert!(!keep_work("root/lost+found/#12"));
        assert!(!keep_root("lost+found"));
        assert!(keep_root("usr/lost+found"));
        assert!(!keep_work("etc/passwd"));
    }

    #[test]
    fn the_parents_own_identity_files_are_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = banger_disk::Staging::new_in(dir.path()).unwrap();
        staging
            .file("etc/hostname", b"parent\n", 0, 4, 0o640)
            .unwrap();
        staging
            .symlink("etc/resolv.conf", "../run/resolv.conf", 0, 0)
            .unwrap();
        let base = dir.path().join("base.ext4");
        staging
            .build(&base, 8 << 20, &banger_disk::MkfsOptions::default())
            .unwrap();

        let mut out = tar::Builder::new(Vec::new());
        add_parent_identity(&mut out, &base).unwrap();
        let bytes = out.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert!(h.mtime().unwrap() > 0);
            let row = (
                e.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.gid().unwrap(),
                e.link_name().unwrap().map(|l| l.display().to_string()),
            );
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push((row, body));
        }
        assert_eq!(
            seen,
            [
                (("etc/hostname".into(), 0o640, 4, None), "parent\n".into()),
                (
                    (
                        "etc/resolv.conf".into(),
                        0o777,
                        0,
                        Some("../run/resolv.conf".into())
                    ),
                    String::new()
                ),
            ]
        );
    }

    #[test]
    fn names_are_made_relative_and_never_climb() {
        assert_eq!(relative(Path::new(".")).unwrap(), None);
        assert_eq!(
            relative(Path::new("./etc/hosts")).unwrap().as_deref(),
            Some("etc/hosts")
        );
        assert!(relative(Path::new("../etc")).is_err());
        assert!(relative(Path::new("/etc")).is_err());
    }

    #[test]
    fn entries_are_filtered_with_their_headers() {
        let mut src = tar::Builder::new(Vec::new());
        let mut add = |name: &str, mode: u32, uid: u64, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_size(body.len() as u64);
            src.append_data(&mut h, name, body).unwrap();
        };
        add("./usr/local/bin/hello", 0o4755, 7, b"#!/bin/sh\necho hi\n");
        add("./etc/hostname", 0o644, 0, b"vm1\n");
        let long = format!("./opt/{}/f", "d".repeat(150));
        add(&long, 0o600, 0, b"x");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        src.append_link(&mut h, "./bin/hi", "/usr/local/bin/hello")
            .unwrap();
        let bytes = src.into_inner().unwrap();

        let mut out = tar::Builder::new(Vec::new());
        copy_entries(bytes.as_slice(), &mut out, keep_root).unwrap();
        let bytes = out.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let uid = e.header().uid().unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push((name, mode, uid, link, body));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(
            seen[0],
            (
                "usr/local/bin/hello".into(),
                0o4755,
                7,
                None,
                "#!/bin/sh\necho hi\n".into()
            )
        );
        assert_eq!(seen[1].0, long.trim_start_matches("./"));
        assert_eq!(seen[1].4, "x");
        assert_eq!(seen[2].0, "bin/hi");
        assert_eq!(seen[2].3.as_deref(), Some("/usr/local/bin/hello"));
    }

    /// A guest agent over a pipe: the handshake, then for the copy-out it
    /// is asked for, a tar holding one file of `file_bytes`.
    async fn hostile_copy(
        file_bytes: usize,
    ) -> (
        banger_proto::client::AgentClient,
        tokio::task::JoinHandle<()>,
    ) {
        use banger_proto::client::{read_frame_async, write_frame_async};
        use banger_proto::{FrameKind, Message, PROTOCOL_VERSION, caps};
        let (host, mut agent) = tokio::io::duplex(1 << 20);
        let fake = tokio::spawn(async move {
            let send = |m: Message| banger_proto::Frame::control(0, m);
            read_frame_async(&mut agent).await.unwrap();
            let ready = send(Message::Ready {
                agent_version: "hostile".into(),
                protocol_version: PROTOCOL_VERSION,
                capabilities: caps::AGENT.iter().map(|c| c.to_string()).collect(),
            });
            write_frame_async(&mut agent, &ready).await.unwrap();
            let Some(banger_proto::Frame::Control { stream, .. }) =
                read_frame_async(&mut agent).await.unwrap()
            else {
                panic!("no copy_out");
            };
            let reply = |m| banger_proto::Frame::control(stream, m);
            write_frame_async(&mut agent, &reply(Message::Opened))
                .await
                .unwrap();
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(file_bytes as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, "big", std::io::repeat(7).take(file_bytes as u64))
                .unwrap();
            let tar = tar.into_inner().unwrap();
            for chunk in tar.chunks(banger_proto::flow::MAX_CHUNK) {
                let data = banger_proto::Frame::Data {
                    stream,
                    kind: FrameKind::Stdout,
                    data: chunk.to_vec(),
                };
                if write_frame_async(&mut agent, &data).await.is_err() {
                    return;
                }
            }
            let _ = write_frame_async(&mut agent, &reply(Message::Eof)).await;
            let _ = write_frame_async(&mut agent, &reply(Message::Done)).await;
            // Keep the pipe open until the host is done with it.
            let _ = read_frame_async(&mut agent).await;
        });
        let client = banger_proto::client::AgentClient::connect(host)
            .await
            .unwrap();
        (client, fake)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_stream_stops_at_what_the_disks_hold() {
        // 200 KiB of file against a 64 KiB budget: refused, not written.
        let (client, fake) = hostile_copy(200 << 10).await;
        let stream = client.copy_out_one_fs("/").await.unwrap();
        let out = tar::Builder::new(Vec::new());
        let budget = Arc::new(AtomicU64::new(64 << 10));
        let err = pump(stream, out, "h", "/", |_| true, &budget)
            .await
            .err()
            .expect("the stream went past the budget")
            .to_string();
        assert!(err.contains("more for / than its disks can hold"), "{err}");
        drop(client);
        fake.abort();
        // Within the budget the same stream is taken whole.
        let (client, fake) = hostile_copy(16 << 10).await;
        let stream = client.copy_out_one_fs("/").await.unwrap();
        let budget = Arc::new(AtomicU64::new(64 << 10));
        let out = pump(
            stream,
            tar::Builder::new(Vec::new()),
            "h",
            "/",
            |_| true,
            &budget,
        )
        .await
        .unwrap();
        let bytes = out.into_inner().unwrap();
        assert!(bytes.len() > 16 << 10);
        drop(client);
        fake.abort();
    }
}
