//! Workspaces: a host git checkout put into a guest as a real repository,
//! and the guest's work brought back as a host branch.
//!
//! Everything crosses through ordinary exec sessions (`banger vm exec -i`
//! run as a child process, so the one exec client with its flow control
//! carries the bytes): no agent operation of its own, nothing but `git`,
//! `tar` and a POSIX shell in the guest.
//!
//! - *sync*: one tar on the guest's stdin holding `repo.bundle`
//!   (`git bundle create - --all`: the history), `tree/` (tracked files that
//!   differ from HEAD, staged or not, and untracked files that are not
//!   ignored) and `deleted` (NUL-separated paths gone from the working
//!   tree). The guest fetches the bundle into `refs/remotes/host/*`, checks
//!   out the host's HEAD on the host's branch name and lays `tree/` over it.
//!   It records the host commit in `refs/banger/synced` and the tree it left
//!   (HEAD plus those changes) in `refs/banger/synced-tree`, so a later sync
//!   can tell the guest's own edits and commits from what banger put there.
//! - *export*: the guest snapshots its working tree with a temporary index
//!   (its own index and files are untouched), commits it on top of HEAD when
//!   it differs, and streams `git bundle create - <tip> ^<synced>` out; the
//!   host fetches it into `refs/banger/exports/<branch>` and moves the
//!   branch with a compare-and-swap `update-ref`, refusing when the branch
//!   moved since banger last set it (that value is kept in
//!   `refs/banger/exported/<branch>`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

/// Exit code the guest scripts use for a refusal they explain on stderr.
const REFUSED: i32 = 3;

/// The guest side of a sync. Arguments: dest, host commit, host branch
/// (empty when detached), user.name, user.email. Stdin: the sync tar.
const SYNC_SCRIPT: &str = r#"
set -eu
dest=$1 base=$2 branch=$3
command -v git >/dev/null 2>&1 || { echo "the guest has no git; use an image with git installed" >&2; exit 3; }
command -v tar >/dev/null 2>&1 || { echo "the guest has no tar" >&2; exit 3; }
# Scratch beside the destination, on its filesystem, not in /tmp: an init
# that is still booting (systemd's tmp.mount) may mount a tmpfs over /tmp
# while this runs, hiding what was unpacked there.
parent=$(dirname "$dest"); mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.banger-sync.XXXXXX")
trap 'rm -rf "$tmp" "$dest/.git/banger-index.$$"' EXIT
trap 'exit 129' HUP INT TERM
tar -x -f - --no-same-owner -C "$tmp"
# The scratch index lives next to the real one, on the workspace's own
# filesystem, as git expects of an index it writes and renames.
snapshot() { idx="$dest/.git/banger-index.$$"; cp .git/index "$idx" 2>/dev/null || true; GIT_INDEX_FILE="$idx" git add -A; GIT_INDEX_FILE="$idx" git write-tree; rm -f "$idx"; }
if [ -e "$dest/.git" ]; then
  cd "$dest"
  synced=$(git rev-parse -q --verify refs/banger/synced) || { echo "$dest is a git repository banger did not sync; remove it or choose another --workspace-path" >&2; exit 3; }
  git fetch -q "$tmp/repo.bundle" '+refs/heads/*:refs/remotes/host/*' '+refs/tags/*:refs/tags/*'
  head=$(git rev-parse HEAD)
  if [ "$(snapshot)" != "$(git rev-parse refs/banger/synced-tree)" ] && [ "$head" = "$synced" ]; then
    echo "the guest copy in $dest has uncommitted changes of its own; export them (banger workspace export) or discard them in the guest, then sync again" >&2; exit 3
  fi
  if [ "$head" != "$synced" ]; then
    if git merge-base --is-ancestor "$head" "$base"; then :
    elif git merge-base --is-ancestor "$base" "$head" && [ ! -s "$tmp/changes" ]; then
      echo "up to date: the guest is $(git rev-list --count "$base..$head") commit(s) ahead of the host"; exit 0
    else
      echo "the guest has commits the host lacks (HEAD $head); export them (banger workspace export), merge on the host, then sync again" >&2; exit 3
    fi
    [ -z "$(git status --porcelain)" ] || { echo "the guest copy in $dest has uncommitted changes on top of its own commits; commit or export them first" >&2; exit 3; }
  fi
  git reset -q --hard "$base"
  git clean -q -fd
else
  if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then echo "$dest exists and is not empty; choose another --workspace-path" >&2; exit 3; fi
  git init -q "$dest"; cd "$dest"
  git config user.name "$4"; git config user.email "$5"
  git fetch -q "$tmp/repo.bundle" '+refs/heads/*:refs/remotes/host/*' '+refs/tags/*:refs/tags/*'
  if [ -n "$branch" ]; then git checkout -q -B "$branch" "$base"; else git checkout -q --detach "$base"; fi
fi
if [ -n "$branch" ] && [ "$(git symbolic-ref -q --short HEAD || true)" != "$branch" ]; then git checkout -q -B "$branch" "$base"; fi
cp -a "$tmp/tree/." .
if [ -s "$tmp/deleted" ]; then xargs -0 rm -f -- < "$tmp/deleted"; fi
git update-ref refs/banger/synced "$base"
git update-ref refs/banger/synced-tree "$(snapshot)"
printf 'host-commit %s\nhost-branch %s\nsynced-at %s\n' "$base" "$branch" "$(date -u +%FT%TZ)" > .git/banger-sync
echo "synced $base into $dest"
"#;

/// Guest side of an export, step one: snapshot and commit the working tree
/// with a temporary index, print `<tip> <synced>`.
const EXPORT_SCRIPT: &str = r#"
set -eu
cd "$1" 2>/dev/null || { echo "no workspace at $1 in the guest (banger workspace sync first)" >&2; exit 3; }
synced=$(git rev-parse -q --verify refs/banger/synced) || { echo "$1 was not synced by banger" >&2; exit 3; }
idx="$PWD/.git/banger-index.$$"; trap 'rm -f "$idx"' EXIT
cp .git/index "$idx"
GIT_INDEX_FILE="$idx" git add -A
tree=$(GIT_INDEX_FILE="$idx" git write-tree)
tip=$(git rev-parse HEAD)
if [ "$tree" != "$(git rev-parse "HEAD^{tree}")" ]; then
  tip=$(git commit-tree -p HEAD -m "banger: uncommitted changes in VM $2" -m "Exported by banger workspace export from the guest's working tree (staged, unstaged and untracked files)." "$tree")
fi
git update-ref refs/banger/export "$tip"
echo "$tip $synced"
"#;

/// Step two: the bundle of what the host lacks, on stdout.
const BUNDLE_SCRIPT: &str = r#"cd "$1" && git bundle create -q - refs/banger/export "^$2""#;

/// A host git repository.
pub struct HostRepo {
    pub root: PathBuf,
}

impl HostRepo {
    /// The repository containing `dir`.
    pub fn find(dir: &Path) -> Result<HostRepo> {
        let out = git_in(dir, &["rev-parse", "--show-toplevel"])
            .with_context(|| format!("{} is not inside a git repository", dir.display()))?;
        Ok(HostRepo {
            root: PathBuf::from(out.trim()),
        })
    }

    /// `<guest_dir>/<repo directory name>` unless `path` is given.
    pub fn guest_path(&self, guest_dir: &str, path: Option<&str>) -> Result<String> {
        if let Some(p) = path {
            if !p.starts_with('/') {
                bail!("--workspace-path {p:?} must be an absolute guest path");
            }
            return Ok(p.trim_end_matches('/').to_string());
        }
        let name = self
            .root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{} has no usable directory name", self.root.display()))?;
        Ok(format!("{}/{name}", guest_dir.trim_end_matches('/')))
    }

    fn git(&self, args: &[&str]) -> Result<String> {
        git_in(&self.root, args)
    }

    fn config(&self, key: &str) -> Option<String> {
        self.git(&["config", key])
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Paths (NUL-separated from git) that differ from HEAD or are
    /// untracked and not ignored: `(present, deleted)`.
    fn changes(&self) -> Result<(Vec<String>, Vec<String>)> {
        let diff = self.git(&["diff", "--name-only", "-z", "--no-renames", "HEAD"])?;
        let untracked = self.git(&["ls-files", "-z", "--others", "--exclude-standard"])?;
        let (mut present, mut deleted) = (Vec::new(), Vec::new());
        for p in diff.split('\0').chain(untracked.split('\0')) {
            if p.is_empty() {
                continue;
            }
            if self.root.join(p).symlink_metadata().is_ok() {
                present.push(p.to_string());
            } else {
                deleted.push(p.to_string());
            }
        }
        present.sort();
        present.dedup();
        Ok((present, deleted))
    }
}

/// Run git in `dir`, returning stdout; a failure carries git's own message.
fn git_in(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run git (install git on the host)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("git {}: {}", args.join(" "), err.trim().replace('\n', "; "));
    }
    String::from_utf8(out.stdout).context("git printed non-UTF-8 output")
}

/// What feeds a guest script's stdin, on its own thread.
type Feed = Box<dyn FnOnce(&mut dyn Write) -> Result<()> + Send>;

/// A shell script run in a VM through `banger vm exec -i`.
struct GuestRun<'a> {
    vm: &'a str,
    script: &'a str,
    args: Vec<String>,
}

impl GuestRun<'_> {
    /// Run with `input` on stdin (fed from a thread, so nothing is held in
    /// memory) and return stdout; a non-zero exit is the script's stderr.
    fn run(self, input: Option<Feed>, stdout: &mut dyn Write) -> Result<()> {
        let exe = std::env::current_exe().context("find the banger executable")?;
        let mut cmd = Command::new(exe);
        // The same daemon as this command's, local or remote.
        crate::client::pass_host(&mut cmd)?;
        let mut child = cmd
            .args([
                "vm",
                "exec",
                "-i",
                self.vm,
                "--",
                "sh",
                "-c",
                self.script,
                "sh",
            ])
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start banger vm exec")?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let feeder = std::thread::spawn(move || -> Result<()> {
            if let Some(f) = input {
                f(&mut stdin)?;
            }
            Ok(())
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = child.stdout.take().expect("piped stdout");
        std::io::copy(&mut out, stdout).context("read the guest's output")?;
        let status = child.wait()?;
        let fed = feeder
            .join()
            .map_err(|_| anyhow!("stdin feeder panicked"))?;
        let err = errs.join().unwrap_or_default();
        let err = err.trim().replace('\n', "; ");
        // What could not be read on this side is why the guest saw a short
        // stream; a broken pipe, though, means the guest side ended first.
        if let Err(e) = &fed {
            let broken_pipe = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if !broken_pipe {
                return fed.context("send to the guest");
            }
        }
        if !status.success() {
            let err = err.strip_prefix("banger: ").unwrap_or(&err);
            match status.code() {
                Some(REFUSED) => bail!("{err}"),
                Some(127) => bail!("the guest has no shell or git: {err}"),
                _ => bail!("in the guest: {err} ({status})"),
            }
        }
        fed.context("send to the guest")
    }
}

/// Put `repo` into VM `vm` at `dest`. Returns the guest's one-line report.
pub fn sync(repo: &HostRepo, vm: &str, dest: &str) -> Result<String> {
    let head = repo
        .git(&["rev-parse", "--verify", "HEAD^{commit}"])
        .context("the repository has no commit yet; commit first")?
        .trim()
        .to_string();
    let branch = repo
        .git(&["symbolic-ref", "-q", "--short", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let bundle = tempfile::NamedTempFile::new().context("temporary bundle file")?;
    let out = Command::new("git")
        .arg("-C")
        .arg(&repo.root)
        .args(["bundle", "create", "-q"])
        .arg(bundle.path())
        .arg("--all")
        .stdin(Stdio::null())
        .output()
        .context("run git bundle")?;
    if !out.status.success() {
        bail!(
            "git bundle create: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (present, deleted) = repo.changes()?;
    let root = repo.root.clone();
    let bundle_path = bundle.path().to_path_buf();
    let feed = move |w: &mut dyn Write| -> Result<()> {
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_path_with_name(&bundle_path, "repo.bundle")?;
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "tree", std::io::empty())?;
        for p in &present {
            let src = root.join(p);
            tar.append_path_with_name(&src, Path::new("tree").join(p))
                .with_context(|| format!("add {} to the sync", src.display()))?;
        }
        let list: Vec<u8> = deleted
            .iter()
            .flat_map(|p| [p.as_bytes(), b"\0"].concat())
            .collect();
        let changes = if present.is_empty() && deleted.is_empty() {
            0
        } else {
            1
        };
        for (name, data) in [("deleted", list), ("changes", vec![b'x'; changes])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, name, data.as_slice())?;
        }
        tar.finish()?;
        Ok(())
    };
    let mut out = Vec::new();
    GuestRun {
        vm,
        script: SYNC_SCRIPT,
        args: vec![
            dest.to_string(),
            head,
            branch,
            repo.config("user.name").unwrap_or_else(|| "banger".into()),
            repo.config("user.email")
                .unwrap_or_else(|| "banger@localhost".into()),
        ],
    }
    .run(Some(Box::new(feed)), &mut out)?;
    drop(bundle);
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// What [`export`] did.
pub struct Exported {
    pub branch: String,
    pub tip: String,
    pub commits: usize,
}

/// Bring the guest's commits and uncommitted changes at `src` back as
/// `branch` in `repo`, without touching the host's HEAD, index or files.
pub fn export(
    repo: &HostRepo,
    vm: &str,
    vm_name: &str,
    src: &str,
    branch: &str,
    force: bool,
    dir_arg: &str,
) -> Result<Exported> {
    repo.git(&["check-ref-format", "--branch", branch])
        .with_context(|| format!("{branch:?} is not a valid branch name"))?;
    let full = format!("refs/heads/{branch}");
    let current = repo
        .git(&["symbolic-ref", "-q", "HEAD"])
        .unwrap_or_default();
    if current.trim() == full {
        bail!("branch {branch} is checked out on the host; export to another --branch");
    }
    let mut out = Vec::new();
    GuestRun {
        vm,
        script: EXPORT_SCRIPT,
        args: vec![src.to_string(), vm_name.to_string()],
    }
    .run(None, &mut out)?;
    let line = String::from_utf8_lossy(&out);
    let mut words = line.split_whitespace();
    let (Some(tip), Some(synced)) = (words.next(), words.next()) else {
        bail!("unexpected answer from the guest: {line:?}");
    };
    let (tip, synced) = (tip.to_string(), synced.to_string());
    // Fetch only what the host lacks.
    if repo
        .git(&["cat-file", "-e", &format!("{tip}^{{commit}}")])
        .is_err()
    {
        let bundle = tempfile::NamedTempFile::new().context("temporary bundle file")?;
        let mut file = bundle.reopen()?;
        GuestRun {
            vm,
            script: BUNDLE_SCRIPT,
            args: vec![src.to_string(), synced.clone()],
        }
        .run(None, &mut file)?;
        file.flush()?;
        let bundle_path = bundle.path().to_str().context("non-UTF-8 temp path")?;
        repo.git(&[
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            bundle_path,
            &format!("+refs/banger/export:refs/banger/exports/{branch}"),
        ])?;
    }
    // Move the branch only from the value banger last gave it (or create
    // it), as one compare-and-swap.
    let record = format!("refs/banger/exported/{branch}");
    let now = repo
        .git(&["rev-parse", "-q", "--verify", &full])
        .ok()
        .map(|s| s.trim().to_string());
    let ours = repo
        .git(&["rev-parse", "-q", "--verify", &record])
        .ok()
        .map(|s| s.trim().to_string());
    if let Some(now) = &now
        && !force
        && ours.as_deref() != Some(now.as_str())
    {
        let why = match &ours {
            Some(o) => format!(
                "moved since the last export (banger set it to {}, it is now {})",
                &o[..12],
                &now[..12]
            ),
            None => "exists and was not made by banger workspace export".to_string(),
        };
        bail!(
            "branch {branch} {why}; to overwrite it: banger workspace export {vm} {dir_arg} --branch {branch} --force"
        );
    }
    let zero = "0".repeat(tip.len());
    repo.git(&[
        "update-ref",
        "-m",
        "banger workspace export",
        &full,
        &tip,
        now.as_deref().unwrap_or(&zero),
    ])?;
    repo.git(&["update-ref", &record, &tip])?;
    let count = repo
        .git(&["rev-list", "--count", &format!("{synced}..{tip}")])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok(Exported {
        branch: branch.to_string(),
        tip,
        commits: count,
    })
}
