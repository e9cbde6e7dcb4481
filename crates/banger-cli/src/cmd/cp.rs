//! `banger vm cp SRC DST`: files and trees between the host and a VM, with
//! `docker cp`'s rules. One side is `VM:PATH` (absolute in the guest), the
//! other a host path or `-` (a tar stream on stdin or stdout).
//!
//! - into an existing directory: the source lands inside it under its own
//!   name (`SRC/.` copies the directory's contents instead);
//! - to a path that does not exist: the source is created there under that
//!   name (its parent must exist);
//! - onto an existing file: a file replaces it; a directory is refused.
//!
//! Both ways go through the daemon's `files` routes as one tar stream
//! (modes with setuid, owners, symlinks and mtimes kept; as root in the
//! guest, owners always; on the host when banger runs as root). The tar is
//! written and read by a blocking thread on a [`crate::pipe`] of a few
//! chunks, so memory stays bounded whatever the size. Entries coming from
//! the guest are untrusted: none may land outside the destination or be a
//! hard link.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use banger_api::PathQuery;
use banger_api::endpoints::{VmsCopyIn, VmsCopyOut};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::http::StatusCode;
use tokio::sync::mpsc;

use crate::client::{self, Client};
use crate::pipe::{self, ChanBody, ChanReader, ChanWriter, DEPTH};
use banger_proto::land;

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Source: a host path, `VM:PATH`, or `-` for a tar stream on stdin
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    src: String,
    /// Destination: a host path, `VM:PATH`, or `-` for a tar stream on stdout
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    dst: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Operand {
    Host(String),
    Stdio,
    Guest { vm: String, path: String },
}

/// `VM:PATH` when a colon comes before any slash (docker's rule: `./a:b`
/// is a host path).
fn operand(s: &str) -> Result<Operand> {
    if s == "-" {
        return Ok(Operand::Stdio);
    }
    match s.split_once(':') {
        Some((vm, path)) if !vm.contains('/') => {
            if vm.is_empty() {
                bail!("{s}: no VM name before the colon");
            }
            if !path.starts_with('/') {
                bail!("{s}: the guest path must be absolute (start with /)");
            }
            Ok(Operand::Guest {
                vm: vm.into(),
                path: path.into(),
            })
        }
        _ => Ok(Operand::Host(s.into())),
    }
}

/// What is at a destination path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Other,
}

/// Where the archive goes: unpacked under `base`, its top entry renamed to
/// `name` (`None`: the top entry's contents go straight into `base`).
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    base: String,
    name: Option<String>,
}

fn split(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    let p = Path::new(if trimmed.is_empty() { "/" } else { trimmed });
    let parent = p
        .parent()
        .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
    let parent = if parent.is_empty() {
        ".".into()
    } else {
        parent
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

/// Source `SRC/.` means "its contents".
fn contents_only(src: &str) -> bool {
    src == "." || src.ends_with("/.")
}

fn base_name(src: &str) -> String {
    let s = src.strip_suffix("/.").unwrap_or(src);
    split(s).1
}

/// docker cp's rules. `dst_state` is what `dst` is (`None`: absent) and
/// `parent_is_dir` whether `dst`'s parent is a directory.
fn plan(
    src: &str,
    src_kind: Kind,
    dst: &str,
    dst_state: Option<Kind>,
    parent_is_dir: bool,
) -> Result<Plan, String> {
    let (parent, dst_name) = split(dst);
    match dst_state {
        Some(Kind::Dir) => Ok(Plan {
            base: dst.into(),
            name: if contents_only(src) && src_kind == Kind::Dir {
                None
            } else {
                Some(base_name(src))
            },
        }),
        Some(Kind::Other) if src_kind == Kind::Dir => {
            Err(format!("{dst}: cannot copy a directory onto a file"))
        }
        Some(Kind::Other) if dst.ends_with('/') => Err(format!("{dst}: not a directory")),
        Some(Kind::Other) => Ok(Plan {
            base: parent,
            name: Some(dst_name),
        }),
        None if src_kind != Kind::Dir && dst.ends_with('/') => {
            Err(format!("{dst}: no such directory"))
        }
        None if !parent_is_dir => Err(format!("{parent}: no such directory")),
        None => Ok(Plan {
            base: parent,
            name: Some(dst_name),
        }),
    }
}

pub async fn run(a: CpArgs) -> Result<ExitCode> {
    // Operands are checked before the daemon is asked for anything.
    let (src, dst) = (operand(&a.src)?, operand(&a.dst)?);
    let client = client::daemon().await?;
    match (src, dst) {
        (Operand::Guest { .. }, Operand::Guest { .. }) => {
            bail!("copying between two VMs is not supported; copy through the host")
        }
        (Operand::Host(_) | Operand::Stdio, Operand::Host(_) | Operand::Stdio) => {
            bail!("one of SRC and DST must be VM:PATH")
        }
        (src, Operand::Guest { vm, path }) => copy_in(&client, src, &vm, &path).await?,
        (Operand::Guest { vm, path }, dst) => copy_out(&client, &vm, &path, dst).await?,
    }
    Ok(ExitCode::SUCCESS)
}

// ---- the guest side -------------------------------------------------------

/// What the guest has at `path` (symlinks followed): read from the first
/// header of the tar the daemon streams for it, then hung up on.
async fn guest_kind(client: &Client, vm: &str, path: &str) -> Result<Option<Kind>> {
    let mut path = path.to_owned();
    for _ in 0..8 {
        let resp = client
            .request::<VmsCopyOut, _>(&[vm], &PathQuery { path: path.clone() }, Empty::new())
            .await?;
        if resp.status() != StatusCode::OK {
            let e = client::error_of(resp).await;
            let text = e.to_string();
            if text.contains("(os error 2)") {
                return Ok(None);
            }
            return Err(e);
        }
        let mut body = resp.into_body();
        let mut head = Vec::new();
        while head.len() < 64 * 1024 {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        head.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => bail!("{vm}:{path}: the stream broke off: {e}"),
                None => break,
            }
        }
        drop(body);
        let mut ar = tar::Archive::new(io::Cursor::new(head));
        let first = ar
            .entries()
            .ok()
            .and_then(|mut es| es.next())
            .and_then(Result::ok)
            .ok_or_else(|| anyhow!("{vm}:{path}: the guest sent no archive header"))?;
        let h = first.header();
        match h.entry_type() {
            tar::EntryType::Directory => return Ok(Some(Kind::Dir)),
            tar::EntryType::Symlink => {
                let target = h
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| anyhow!("{vm}:{path}: a symlink with no target"))?;
                let target = target.to_string_lossy().into_owned();
                path = if target.starts_with('/') {
                    target
                } else {
                    format!("{}/{target}", split(&path).0)
                };
            }
            _ => return Ok(Some(Kind::Other)),
        }
    }
    bail!("{vm}:{path}: too many levels of symbolic links")
}

async fn copy_in(client: &Client, src: Operand, vm: &str, dst: &str) -> Result<()> {
    let dst_state = guest_kind(client, vm, dst).await?;
    type Producer = Box<dyn FnOnce(ChanWriter) -> Result<(), String> + Send>;
    let (base, producer): (String, Producer) = match src {
        Operand::Stdio => {
            if dst_state == Some(Kind::Other) {
                bail!("{vm}:{dst}: not a directory (a tar stream unpacks into a directory)");
            }
            let producer = |mut w: ChanWriter| {
                let mut stdin = io::stdin().lock();
                match io::copy(&mut stdin, &mut w).and_then(|_| w.flush()) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let message = format!("read the tar from stdin: {e}");
                        w.fail(e);
                        Err(message)
                    }
                }
            };
            (dst.to_owned(), Box::new(producer))
        }
        Operand::Host(src) => {
            let meta = fs::symlink_metadata(src.strip_suffix("/.").unwrap_or(&src))
                .with_context(|| format!("{src}: cannot read"))?;
            let src_kind = if meta.is_dir() {
                Kind::Dir
            } else {
                Kind::Other
            };
            let parent_is_dir = dst_state.is_some()
                || guest_kind(client, vm, &split(dst).0).await? == Some(Kind::Dir);
            let p = plan(&src, src_kind, dst, dst_state, parent_is_dir)
                .map_err(|e| anyhow!("{vm}:{e}"))?;
            let producer = move |w: ChanWriter| write_tar(w, &src, p.name.as_deref());
            (p.base, Box::new(producer))
        }
        Operand::Guest { .. } => unreachable!("checked by run"),
    };
    let (tx, rx) = mpsc::channel(DEPTH);
    let writer = tokio::task::spawn_blocking(move || producer(ChanWriter::new(tx)));
    let resp = client
        .request::<VmsCopyIn, _>(&[vm], &PathQuery { path: base.clone() }, ChanBody(rx))
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            // A source that failed mid-way is the reason the request broke,
            // unless the way to the daemon broke first.
            if e.downcast_ref::<client::ssh::SshFailure>().is_none()
                && writer.is_finished()
                && let Ok(Err(message)) = writer.await
            {
                bail!(message);
            }
            return Err(e);
        }
    };
    if resp.status() != StatusCode::OK {
        // The writer may be blocked on a body nobody reads: leave it to
        // the exit.
        return Err(client::error_of(resp).await);
    }
    let _ = resp.into_body().collect().await;
    writer
        .await
        .context("the tar writer panicked")?
        .map_err(|m| anyhow!(m))
}

/// Writes a tar of `src` to `w`: its top entry named `name`, or its
/// contents at the top when `name` is `None`. A failure names the file and
/// cuts the stream short, so the daemon never takes it as complete.
fn write_tar(w: ChanWriter, src: &str, name: Option<&str>) -> Result<(), String> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let root = Path::new(src.strip_suffix("/.").unwrap_or(src));
    let outcome = match name {
        Some(n) => add(&mut b, root, Path::new(n)),
        None => children(root).and_then(|es| {
            es.into_iter()
                .try_for_each(|e| add(&mut b, &e.path(), Path::new(&e.file_name())))
        }),
    };
    let outcome = outcome
        .and_then(|()| b.finish().map_err(|e| format!("{src}: {e}")))
        .and_then(|()| b.get_mut().flush().map_err(|e| format!("{src}: {e}")));
    if let Err(message) = &outcome {
        b.get_mut().fail(io::Error::other(message.clone()));
    }
    outcome
}

fn children(dir: &Path) -> Result<Vec<fs::DirEntry>, String> {
    let at = |e: io::Error| format!("{}: {e}", dir.display());
    let mut es: Vec<_> = fs::read_dir(dir)
        .map_err(at)?
        .collect::<Result<_, _>>()
        .map_err(at)?;
    es.sort_by_key(fs::DirEntry::file_name);
    Ok(es)
}

fn add<W: Write>(b: &mut tar::Builder<W>, src: &Path, name: &Path) -> Result<(), String> {
    let at = |e: io::Error| format!("{}: {e}", src.display());
    let ft = fs::symlink_metadata(src).map_err(at)?.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    b.append_path_with_name(src, name).map_err(at)?;
    if ft.is_dir() {
        for e in children(src)? {
            add(b, &e.path(), &name.join(e.file_name()))?;
        }
    }
    Ok(())
}

// ---- out of the guest -----------------------------------------------------

async fn copy_out(client: &Client, vm: &str, src: &str, dst: Operand) -> Result<()> {
    let whole = src.strip_suffix("/.").unwrap_or(src);
    let path = if whole.is_empty() { "/" } else { whole };
    let query = PathQuery {
        path: path.to_string(),
    };
    let resp = client
        .request::<VmsCopyOut, _>(&[vm], &query, Empty::new())
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(client::error_of(resp).await);
    }
    let (tx, rx) = mpsc::channel(DEPTH);
    let feeder = tokio::spawn(pipe::drain_into(resp.into_body(), tx));
    let label = format!("{vm}:{src}");
    let src = src.to_owned();
    let outcome = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut r = ChanReader::new(rx);
        match dst {
            Operand::Stdio => {
                let mut out = io::stdout().lock();
                io::copy(&mut r, &mut out).context("write the tar to stdout")?;
                out.flush()?;
                Ok(())
            }
            Operand::Host(dst) => unpack(r, &src, &dst),
            Operand::Guest { .. } => unreachable!("checked by run"),
        }
    })
    .await
    .context("the tar reader panicked")?;
    feeder.abort();
    outcome
        .with_context(|| format!("copy from {label}"))
        .map_err(client::lift)
}

fn host_kind(p: &str) -> Option<Kind> {
    fs::metadata(p)
        .ok()
        .map(|m| if m.is_dir() { Kind::Dir } else { Kind::Other })
}

/// Unpacks the guest's tar of `src` (top entry: `src`'s last component) at
/// `dst` by [`plan`]; the plan waits for the first header, which says what
/// `src` is. Whole or not at all: into a staging directory beside the
/// destination, moved into place once the archive has all arrived
/// (`banger_proto::land`).
fn unpack(r: ChanReader, src: &str, dst: &str) -> Result<()> {
    let mut staging = None;
    let outcome = unpack_staged(r, src, dst, &mut staging);
    if let Some((st, base)) = staging {
        match outcome {
            Ok(()) => land::land(&st, &base).with_context(|| format!("copy into {dst}"))?,
            Err(e) => {
                let _ = fs::remove_dir_all(&st);
                return Err(e);
            }
        }
        return Ok(());
    }
    outcome
}

fn unpack_staged(
    r: ChanReader,
    src: &str,
    dst: &str,
    staging: &mut Option<(PathBuf, PathBuf)>,
) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let root = nix::unistd::geteuid().is_root();
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(root);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    let mut plan_: Option<(PathBuf, Option<String>)> = None;
    let mut dirs = Vec::new();
    for entry in ar.entries().context("read the archive")? {
        let mut e = entry.context("read the archive")?;
        let raw = e.path().context("an entry with a bad name")?.into_owned();
        let mut parts = raw.components().filter(|c| !matches!(c, Component::CurDir));
        let top = parts.next();
        let rest: PathBuf = parts.collect();
        if plan_.is_none() {
            let kind = if e.header().entry_type().is_dir() {
                Kind::Dir
            } else {
                Kind::Other
            };
            let state = host_kind(dst);
            let parent = split(dst).0;
            let p = plan(src, kind, dst, state, host_kind(&parent) == Some(Kind::Dir))
                .map_err(|e| anyhow!(e))?;
            let base = PathBuf::from(&p.base);
            let st = land::staging_dir(&base)
                .with_context(|| format!("create a staging directory in {}", base.display()))?;
            *staging = Some((st.clone(), base));
            plan_ = Some((st, p.name));
        }
        let Some((base, name)) = &plan_ else {
            unreachable!()
        };
        let mapped = match (name, top) {
            (_, None) => continue,
            (None, Some(_)) if rest.as_os_str().is_empty() => continue,
            (None, Some(_)) => rest,
            (Some(n), Some(_)) if rest.as_os_str().is_empty() => PathBuf::from(n),
            (Some(n), Some(_)) => Path::new(n).join(rest),
        };
        if !mapped
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            bail!("entry {} would land outside {dst}", raw.display());
        }
        let kind = e.header().entry_type();
        if kind.is_hard_link() {
            bail!("entry {}: hard links are not accepted", raw.display());
        }
        let target = base.join(&mapped);
        inside(base, &target).with_context(|| format!("entry {}", raw.display()))?;
        if kind.is_dir() {
            fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
            dirs.push((e.header().clone(), target));
            continue;
        }
        e.unpack(&target)
            .with_context(|| format!("write {}", target.display()))?;
    }
    if plan_.is_none() {
        bail!("the guest sent an empty archive");
    }
    // Directories last, deepest first: their modes may forbid writing into
    // them and their mtimes would move with every file added.
    dirs.sort_by(|a, b| b.1.cmp(&a.1));
    for (h, target) in dirs {
        set_dir_meta(&h, &target, root).with_context(|| format!("set {}", target.display()))?;
    }
    Ok(())
}

/// `target`'s parent, symlinks resolved, is under `base`: no write goes
/// through a link that leads out.
fn inside(base: &Path, target: &Path) -> Result<()> {
    let base = base
        .canonicalize()
        .with_context(|| format!("{}", base.display()))?;
    let parent = target.parent().unwrap_or(target);
    let real = parent
        .canonicalize()
        .with_context(|| format!("{}", parent.display()))?;
    if !real.starts_with(&base) {
        bail!(
            "would be written through a symlink out of {}",
            base.display()
        );
    }
    Ok(())
}

fn set_dir_meta(h: &tar::Header, target: &Path, root: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if root {
        let uid = h.uid()?.try_into().ok().map(nix::unistd::Uid::from_raw);
        let gid = h.gid()?.try_into().ok().map(nix::unistd::Gid::from_raw);
        nix::unistd::chown(target, uid, gid).map_err(io::Error::from)?;
    }
    let mode = h.mode()? & 0o7777;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
    let mtime = h.mtime()?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    let f = fs::File::open(target)?;
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands() {
        assert_eq!(operand("-").unwrap(), Operand::Stdio);
        assert_eq!(
            operand("deb:/etc/hosts").unwrap(),
            Operand::Guest {
                vm: "deb".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(operand("./a:b").unwrap(), Operand::Host("./a:b".into()));
        assert!(operand("deb:etc").is_err());
        assert!(operand(":/x").is_err());
    }

    fn p(base: &str, name: Option<&str>) -> Result<Plan, String> {
        Ok(Plan {
            base: base.into(),
            name: name.map(Into::into),
        })
    }

    #[test]
    fn docker_rules() {
        use Kind::{Dir, Other};
        // Into an existing directory, under the source's name.
        assert_eq!(
            plan("a/tree", Dir, "/root", Some(Dir), true),
            p("/root", Some("tree"))
        );
        assert_eq!(
            plan("f.txt", Other, "/root/", Some(Dir), true),
            p("/root/", Some("f.txt"))
        );
        // Contents only.
        assert_eq!(
            plan("a/tree/.", Dir, "/root", Some(Dir), true),
            p("/root", None)
        );
        // A new name.
        assert_eq!(
            plan("a/tree", Dir, "/root/new", None, true),
            p("/root", Some("new"))
        );
        assert_eq!(
            plan("a/tree/.", Dir, "/root/new", None, true),
            p("/root", Some("new"))
        );
        assert_eq!(
            plan("f", Other, "/etc/f2", None, true),
            p("/etc", Some("f2"))
        );
        // Onto a file.
        assert_eq!(
            plan("f", Other, "/etc/hosts", Some(Other), true),
            p("/etc", Some("hosts"))
        );
        assert!(
            plan("d", Dir, "/etc/hosts", Some(Other), true)
                .unwrap_err()
                .contains("onto a file")
        );
        // Missing parent, missing directory.
        assert!(
            plan("f", Other, "/no/f", None, false)
                .unwrap_err()
                .contains("/no: no such directory")
        );
        assert!(
            plan("f", Other, "/new/", None, true)
                .unwrap_err()
                .contains("no such directory")
        );
    }
}
