//! Named contexts, as Docker's: a name for a daemon endpoint, kept as one
//! file per context in the config dir (`<config dir>/contexts/NAME.toml`,
//! holding `host = "ssh://..."` and an optional `description`), and the
//! current one's name in `<config dir>/context`. `default` is built in:
//! this host's own daemon. Only the CLI reads these; the daemon never does.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::client::ssh::SshTarget;

/// The built-in context: this host's daemon.
pub const DEFAULT: &str = "default";

/// What a context file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A context and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub file: ContextFile,
}

/// Where contexts live: beside config.toml (`BANGER_CONFIG`'s directory
/// when that is set).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new() -> Store {
        let config = banger_config::config::config_path();
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Store { dir }
    }

    /// Contexts kept in `dir` rather than beside config.toml.
    #[cfg(test)]
    pub fn in_dir(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn contexts_dir(&self) -> PathBuf {
        self.dir.join("contexts")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.contexts_dir().join(format!("{name}.toml"))
    }

    fn current_file(&self) -> PathBuf {
        self.dir.join("context")
    }

    /// One context by name (not `default`).
    pub fn load(&self, name: &str) -> Result<Named> {
        validate_name(name)?;
        let path = self.file(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no context named {name:?} (`banger context ls` lists them)")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file: ContextFile = toml::from_str(&text)
            .map_err(|e| anyhow!("invalid context file {}: {}", path.display(), e.message()))?;
        Ok(Named {
            name: name.to_string(),
            file,
        })
    }

    /// Every context but `default`, by name.
    pub fn list(&self) -> Result<Vec<Named>> {
        let dir = self.contexts_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".toml") else {
                continue;
            };
            if validate_name(name).is_ok() {
                out.push(self.load(name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Write a new context; an existing name is refused.
    pub fn create(&self, name: &str, file: &ContextFile) -> Result<()> {
        validate_name(name)?;
        if name == DEFAULT {
            bail!("{DEFAULT:?} is this host's own daemon; choose another name");
        }
        SshTarget::parse(&file.host)?;
        let dir = self.contexts_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string(file).context("encode the context")?;
        // create_new: two creates of one name cannot both win.
        let path = self.file(name);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("a context named {name:?} exists already")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
        std::io::Write::write_all(&mut f, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Remove a context; the current one only with `force` (the current
    /// context is then `default`).
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        if name == DEFAULT {
            bail!("{DEFAULT:?} is built in and cannot be removed");
        }
        self.load(name)?;
        if self.current()?.as_deref() == Some(name) {
            if !force {
                bail!(
                    "context {name:?} is the current one; `banger context use default` first, or remove it with --force"
                );
            }
            self.set_current(DEFAULT)?;
        }
        let path = self.file(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }

    /// The current context's name, `None` for `default`.
    pub fn current(&self) -> Result<Option<String>> {
        let path = self.current_file();
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let name = t.trim();
                Ok((!name.is_empty() && name != DEFAULT).then(|| name.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Make `name` current (it must exist, or be `default`).
    pub fn set_current(&self, name: &str) -> Result<()> {
        let path = self.current_file();
        if name == DEFAULT {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
            };
        }
        self.load(name)?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        // Renamed into place: a reader never sees half a name.
        let tmp = self.dir.join(format!(".context.{}", std::process::id()));
        std::fs::write(&tmp, format!("{name}\n"))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Context names: a letter or digit, then letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "invalid context name {name:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit (at most 64)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_use_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::in_dir(dir.path());
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.current().unwrap(), None);
        let f = ContextFile {
            host: "ssh://me@box".into(),
            description: "the closet".into(),
        };
        s.create("box", &f).unwrap();
        assert!(
            s.create("box", &f)
                .unwrap_err()
                .to_string()
                .contains("exists")
        );
        assert!(s.create("default", &f).is_err());
        assert!(s.create("../x", &f).is_err());
        let bad = ContextFile {
            host: "tcp://box".into(),
            description: String::new(),
        };
        assert!(s.create("bad", &bad).is_err());
        assert_eq!(s.list().unwrap()[0].file, f);
        assert!(s.set_current("nope").is_err());
        s.set_current("box").unwrap();
        assert_eq!(s.current().unwrap().as_deref(), Some("box"));
        assert!(
            s.remove("box", false)
                .unwrap_err()
                .to_string()
                .contains("current")
        );
        s.remove("box", true).unwrap();
        assert_eq!(s.current().unwrap(), None);
        assert!(s.list().unwrap().is_empty());
        assert!(s.remove("default", true).is_err());
    }
}
