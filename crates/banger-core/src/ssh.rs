//! banger's SSH material: the managed user key pair (made on first use),
//! each VM's host key (made at create, so it is known before the first
//! boot) and the known_hosts file `vm ssh` checks strictly against.
//!
//! Nothing here is trust-on-first-use: a VM's host key enters known_hosts
//! the moment the VM is recorded and leaves it when the VM is removed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Mutex;

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::Layout;
use crate::error::{CoreError, CoreResult, internal};

/// known_hosts is rewritten whole; one writer at a time.
static KNOWN_HOSTS: Mutex<()> = Mutex::new(());

/// An ed25519 key pair in OpenSSH's encodings.
#[derive(Clone)]
pub struct KeyPair {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----...`
    pub private: String,
    /// `ssh-ed25519 AAAA... comment`
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A fresh ed25519 key pair with `comment`.
pub fn generate(comment: &str) -> CoreResult<KeyPair> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| CoreError::internal(format!("cannot generate an ed25519 key: {e}")))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| CoreError::internal(format!("cannot encode an ed25519 key: {e}")))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| CoreError::internal(format!("cannot encode an ed25519 key: {e}")))?;
    Ok(KeyPair {
        private: private.to_string(),
        public,
    })
}

/// The managed user key: its public half, and the pair itself when it is
/// new and not yet on disk.
#[derive(Debug)]
pub struct UserKey {
    pub public: String,
    pub new: Option<KeyPair>,
}

/// The managed user key `<data_dir>/ssh/id_ed25519`, or a fresh pair when
/// there is none. A fresh pair is only in memory: [`save_user_key`] writes
/// it once the VM it was made for is whole, so a failed first create leaves
/// no key behind. Callers serialize (the VM create lock).
pub fn user_key(layout: &Layout) -> CoreResult<UserKey> {
    let key_path = layout.ssh_key();
    if !key_path.exists() {
        let pair = generate("banger")?;
        return Ok(UserKey {
            public: pair.public.clone(),
            new: Some(pair),
        });
    }
    let text = std::fs::read_to_string(&key_path)
        .map_err(|e| internal(&format!("cannot read {}", key_path.display()), &e))?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| {
        CoreError::internal(format!(
            "{} is not an OpenSSH private key: {e}",
            key_path.display()
        ))
    })?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| CoreError::internal(format!("cannot encode the user key: {e}")))?;
    Ok(UserKey { public, new: None })
}

/// Write a new user key pair: `id_ed25519` (0600) and `id_ed25519.pub`.
pub fn save_user_key(layout: &Layout, pair: &KeyPair) -> CoreResult<()> {
    let key_path = layout.ssh_key();
    create_private_dir(&layout.ssh_dir())?;
    // Written beside, then renamed: a crash never leaves half a key, and
    // the private half is 0600 from its first byte. The public half goes
    // last: its presence says the pair is complete.
    write_atomic(&key_path, pair.private.as_bytes(), 0o600)?;
    write_atomic(
        &key_path.with_extension("pub"),
        format!("{}\n", pair.public).as_bytes(),
        0o644,
    )
}

/// Remove the user key pair (a first create that failed after saving it).
pub fn forget_user_key(layout: &Layout) {
    let key_path = layout.ssh_key();
    let _ = std::fs::remove_file(key_path.with_extension("pub"));
    let _ = std::fs::remove_file(key_path);
}

/// Record VM `id`'s host key under its names (`<name>.<domain>`, its IP and
/// the alias `vm ssh` uses), replacing any line that names the alias.
pub fn add_known_host(layout: &Layout, names: &[String], public: &str) -> CoreResult<()> {
    let alias = names.last().cloned().unwrap_or_default();
    rewrite_known_hosts(layout, |lines| {
        lines.retain(|l| !names_host(l, &alias));
        // known_hosts keys carry no comment of their own; keep type + data.
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        lines.push(format!("{} {}", names.join(","), key.join(" ")));
    })
}

/// Drop every known_hosts line that names `alias`.
pub fn remove_known_host(layout: &Layout, alias: &str) -> CoreResult<()> {
    if !layout.known_hosts().exists() {
        return Ok(());
    }
    rewrite_known_hosts(layout, |lines| lines.retain(|l| !names_host(l, alias)))
}

/// The known_hosts lines that name `alias`.
pub fn known_host_lines(layout: &Layout, alias: &str) -> CoreResult<Vec<String>> {
    let path = layout.known_hosts();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(internal(&format!("cannot read {}", path.display()), &e)),
    };
    Ok(text
        .lines()
        .filter(|l| names_host(l, alias))
        .map(str::to_string)
        .collect())
}

fn names_host(line: &str, host: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|hosts| hosts.split(',').any(|h| h == host))
}

fn rewrite_known_hosts(layout: &Layout, edit: impl FnOnce(&mut Vec<String>)) -> CoreResult<()> {
    let _one = KNOWN_HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let path = layout.known_hosts();
    create_private_dir(&layout.ssh_dir())?;
    let mut lines: Vec<String> = match std::fs::read_to_string(&path) {
        Ok(t) => t.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(internal(&format!("cannot read {}", path.display()), &e)),
    };
    edit(&mut lines);
    if lines.is_empty() {
        // The last VM went: no file rather than an empty one.
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(internal(&format!("cannot remove {}", path.display()), &e))
            }
            _ => Ok(()),
        };
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_atomic(&path, text.as_bytes(), 0o644)
}

fn create_private_dir(dir: &Path) -> CoreResult<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| internal(&format!("cannot create {}", dir.display()), &e))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> CoreResult<()> {
    let tmp = path.with_extension("partial");
    let err = |e: std::io::Error| {
        if crate::error::is_no_space(&e) {
            return crate::error::CoreError::no_space(path.parent().unwrap_or(path).display());
        }
        internal(&format!("cannot write {}", path.display()), &e)
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_key_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let made = user_key(&layout).unwrap();
        assert!(!layout.ssh_key().exists(), "nothing written until saved");
        save_user_key(&layout, made.new.as_ref().unwrap()).unwrap();
        let first = made.public;
        assert!(first.starts_with("ssh-ed25519 "), "{first}");
        let mode = std::fs::metadata(layout.ssh_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(layout.ssh_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let again = user_key(&layout).unwrap();
        assert!(again.new.is_none());
        assert_eq!(again.public, first, "the same key next time");
        let on_disk = std::fs::read_to_string(layout.ssh_key().with_extension("pub")).unwrap();
        assert_eq!(on_disk.trim(), first);
    }

    #[test]
    fn known_hosts_lines_come_and_go_by_alias() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let a = generate("a").unwrap();
        let b = generate("b").unwrap();
        let names = |n: &str, ip: &str, id: &str| {
            vec![
                format!("{n}.vm"),
                ip.to_string(),
                crate::paths::ssh_host_alias(id),
            ]
        };
        add_known_host(&layout, &names("a", "172.16.0.2", "aa"), &a.public).unwrap();
        add_known_host(&layout, &names("b", "172.16.0.3", "bb"), &b.public).unwrap();
        let text = std::fs::read_to_string(layout.known_hosts()).unwrap();
        let key_a: Vec<&str> = a.public.split_whitespace().take(2).collect();
        assert!(
            text.contains(&format!("a.vm,172.16.0.2,banger-vm-aa {}", key_a.join(" "))),
            "{text}"
        );
        remove_known_host(&layout, "banger-vm-aa").unwrap();
        let text = std::fs::read_to_string(layout.known_hosts()).unwrap();
        assert!(!text.contains("banger-vm-aa"), "{text}");
        assert!(text.contains("banger-vm-bb"), "{text}");
        remove_known_host(&layout, "banger-vm-bb").unwrap();
        assert!(!layout.known_hosts().exists(), "no empty file left");
    }
}
