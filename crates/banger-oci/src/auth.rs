//! Registry credentials: explicit username/password, or the `auths`
//! section of a docker `config.json`. The token (bearer) flow itself is
//! oci-client's: it answers the registry's challenge with these credentials.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use crate::OciError;

/// Where credentials come from.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials; token servers still hand out anonymous pull tokens.
    #[default]
    Anonymous,
    /// Given explicitly (e.g. `--username` + password on stdin).
    Basic { username: String, password: String },
    /// Looked up by registry in a docker `config.json`; anonymous when the
    /// file is absent or has no entry for the registry.
    DockerConfig(PathBuf),
}

impl std::fmt::Debug for Credentials {
    // Never print a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::DockerConfig(p) => write!(f, "DockerConfig({})", p.display()),
        }
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

impl Credentials {
    /// The auth oci-client should use for `registry` (`host[:port]` as
    /// written in the reference).
    pub(crate) fn for_registry(&self, registry: &str) -> Result<RegistryAuth, OciError> {
        match self {
            Credentials::Anonymous => Ok(RegistryAuth::Anonymous),
            Credentials::Basic { username, password } => {
                Ok(RegistryAuth::Basic(username.clone(), password.clone()))
            }
            Credentials::DockerConfig(path) => Ok(match docker_config_auth(path, registry)? {
                Some((user, pass)) => RegistryAuth::Basic(user, pass),
                None => RegistryAuth::Anonymous,
            }),
        }
    }
}

/// The user and password `config.json` at `path` holds for `registry`.
/// Keys may be bare hosts or URLs (`https://host/v1/`); Docker Hub is
/// stored under `https://index.docker.io/v1/`.
pub fn docker_config_auth(
    path: &Path,
    registry: &str,
) -> Result<Option<(String, String)>, OciError> {
    let bad = |detail: String| OciError::DockerConfig {
        path: path.to_path_buf(),
        detail,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OciError::io("read", path, e)),
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let want = canonical_host(registry);
    for (key, entry) in auths {
        if canonical_host(key) != want {
            continue;
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("auths.{key}.auth is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad(format!("auths.{key}.auth is not UTF-8")))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad(format!("auths.{key}.auth is not user:password")))?;
            return Ok(Some((user.to_string(), pass.to_string())));
        }
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str());
        if let (Some(user), Some(pass)) = (field("username"), field("password")) {
            return Ok(Some((user.to_string(), pass.to_string())));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/` → `h:5000`.
fn canonical_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    #[test]
    fn finds_auth_by_registry() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let (_d, path) = config(&format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
               "127.0.0.1:5000":{{"username":"bob","password":"pw"}}}}}}"#
        ));
        assert_eq!(
            docker_config_auth(&path, "docker.io").unwrap(),
            Some(("alice".into(), "s3:cret".into()))
        );
        assert_eq!(
            docker_config_auth(&path, "127.0.0.1:5000").unwrap(),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(docker_config_auth(&path, "ghcr.io").unwrap(), None);
        assert_eq!(
            docker_config_auth(&path.with_file_name("absent.json"), "ghcr.io").unwrap(),
            None
        );
    }

    #[test]
    fn malformed_config_is_an_error() {
        let (_d, path) = config(r#"{"auths":{"h":{"auth":"%%%"}}}"#);
        let err = docker_config_auth(&path, "h").unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
        let (_d2, path) = config("nope");
        assert!(docker_config_auth(&path, "h").is_err());
    }

    #[test]
    fn debug_hides_password() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
