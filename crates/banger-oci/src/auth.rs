//! Registry credentials: explicit username/password, or a docker
//! `config.json` read the way the docker CLI reads it, for one registry:
//!
//! 1. a `credHelpers` entry for the registry names the one helper that
//!    answers for it; when that helper has nothing the pull is anonymous;
//! 2. else the `credsStore` helper, if any, is asked first;
//! 3. else (or when the store has nothing) the `auths` entry: `auth`
//!    (base64 `user:password`) or `username` + `password`.
//!
//! A helper `X` is the program `docker-credential-X`, found on `PATH` (or
//! a search path the caller gives) and run as `docker-credential-X get`
//! with the server URL on stdin, within [`HELPER_TIMEOUT`]. Its answer is
//! `{"ServerURL", "Username", "Secret"}` JSON; "credentials not found in
//! native keychain" with a failing status means it has none. Secrets never
//! appear in errors or `Debug` output.
//!
//! Registry keys match by host: `https://host/v1/` and `host` are the same
//! registry, and `docker.io`, `index.docker.io` and `registry-1.docker.io`
//! are all Docker Hub, whose helper server URL is `https://index.docker.io/v1/`.
//!
//! The token (bearer) flow itself is oci-client's: it answers the
//! registry's challenge with these credentials.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::OciError;

/// How long a credential helper may take before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The server URL Docker Hub credentials are stored under.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// What a helper prints (with a failing status) when it has no credentials.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// The username with which a helper says its secret is an identity token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// Where credentials come from.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials; token servers still hand out anonymous pull tokens.
    #[default]
    Anonymous,
    /// Given explicitly (e.g. `--username` + password on stdin).
    Basic { username: String, password: String },
    /// Looked up by registry in a docker `config.json` (`credHelpers`,
    /// `credsStore`, `auths`); anonymous when the file is absent or has
    /// nothing for the registry.
    DockerConfig {
        path: PathBuf,
        /// Directories searched for `docker-credential-*` helpers, in
        /// `PATH` syntax; `None` searches the `PATH` environment variable.
        helper_path: Option<OsString>,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::DockerConfig { path, helper_path } => f
                .debug_struct("DockerConfig")
                .field("path", path)
                .field("helper_path", helper_path)
                .finish(),
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
    /// The docker `config.json` at `path`, with helpers found on `PATH`.
    pub fn docker_config(path: PathBuf) -> Credentials {
        Credentials::DockerConfig {
            path,
            helper_path: None,
        }
    }

    /// The auth oci-client should use for `registry` (`host[:port]` as
    /// written in the reference). May run a credential helper.
    pub(crate) async fn for_registry(&self, registry: &str) -> Result<RegistryAuth, OciError> {
        match self {
            Credentials::Anonymous => Ok(RegistryAuth::Anonymous),
            Credentials::Basic { username, password } => {
                Ok(RegistryAuth::Basic(username.clone(), password.clone()))
            }
            Credentials::DockerConfig { path, helper_path } => {
                let search = helper_path
                    .clone()
                    .or_else(|| std::env::var_os("PATH"))
                    .unwrap_or_default();
                let helpers = Helpers {
                    search: &search,
                    timeout: HELPER_TIMEOUT,
                };
                Ok(
                    match docker_config_lookup(path, registry, &helpers).await? {
                        Some((user, pass)) => RegistryAuth::Basic(user, pass),
                        None => RegistryAuth::Anonymous,
                    },
                )
            }
        }
    }
}

/// The user and password the `auths` section of the `config.json` at
/// `path` holds for `registry`. Credential helpers are not consulted (see
/// [`Credentials::DockerConfig`] for the whole lookup).
pub fn docker_config_auth(
    path: &Path,
    registry: &str,
) -> Result<Option<(String, String)>, OciError> {
    match read_config(path)? {
        Some(json) => auths_entry(&json, path, registry),
        None => Ok(None),
    }
}

/// The whole lookup for `registry` in the `config.json` at `path`:
/// `credHelpers`, then `credsStore`, then `auths`.
async fn docker_config_lookup(
    path: &Path,
    registry: &str,
    helpers: &Helpers<'_>,
) -> Result<Option<(String, String)>, OciError> {
    let Some(json) = read_config(path)? else {
        return Ok(None);
    };
    let want = canonical_host(registry);
    if let Some(cred_helpers) = json.get("credHelpers").and_then(Value::as_object) {
        for (key, helper) in cred_helpers {
            if canonical_host(key) != want {
                continue;
            }
            let helper = helper.as_str().ok_or_else(|| OciError::DockerConfig {
                path: path.to_path_buf(),
                detail: format!("credHelpers.{key} is not a string"),
            })?;
            // The helper owns this registry: nothing from it means anonymous.
            return helpers.get(helper, &helper_server(key), registry).await;
        }
    }
    match json.get("credsStore") {
        None | Some(Value::Null) => {}
        Some(Value::String(store)) if store.is_empty() => {}
        Some(Value::String(store)) => {
            if let Some(found) = helpers
                .get(store, &helper_server(registry), registry)
                .await?
            {
                return Ok(Some(found));
            }
        }
        Some(_) => {
            return Err(OciError::DockerConfig {
                path: path.to_path_buf(),
                detail: "credsStore is not a string".into(),
            });
        }
    }
    auths_entry(&json, path, registry)
}

/// The parsed `config.json` at `path`; `None` when there is no such file.
fn read_config(path: &Path) -> Result<Option<Value>, OciError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OciError::io("read", path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| OciError::DockerConfig {
            path: path.to_path_buf(),
            detail: format!("not JSON: {e}"),
        })
}

/// The `auths` entry of `json` (read from `path`) for `registry`.
fn auths_entry(
    json: &Value,
    path: &Path,
    registry: &str,
) -> Result<Option<(String, String)>, OciError> {
    let bad = |detail: String| OciError::DockerConfig {
        path: path.to_path_buf(),
        detail,
    };
    let Some(auths) = json.get("auths").and_then(Value::as_object) else {
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

/// How credential helpers are found and run.
struct Helpers<'a> {
    /// Directories to search, in `PATH` syntax.
    search: &'a OsStr,
    /// A helper still running after this is killed.
    timeout: Duration,
}

/// A helper's answer to `get`. Deliberately without `Debug`: it holds the
/// secret.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl Helpers<'_> {
    /// Ask helper `name` for the credentials of `server` (the URL it
    /// stores them under); `None` when it has none. `registry` is only for
    /// errors.
    async fn get(
        &self,
        name: &str,
        server: &str,
        registry: &str,
    ) -> Result<Option<(String, String)>, OciError> {
        let fail = |detail: String| OciError::CredentialHelper {
            helper: name.to_string(),
            registry: registry.to_string(),
            detail,
        };
        if name.is_empty() || name.contains('/') {
            return Err(fail("not a valid helper name".into()));
        }
        let program = format!("docker-credential-{name}");
        let exe = find_program(&program, self.search)
            .ok_or_else(|| fail(format!("{program} not found on PATH")))?;
        let mut child = tokio::process::Command::new(&exe)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the child on timeout kills it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
        let exchange = async move {
            if let Some(mut stdin) = child.stdin.take() {
                // A helper that exits without reading answers through its
                // status and output; its closed pipe is not the error.
                match stdin.write_all(format!("{server}\n").as_bytes()).await {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                    _ => {}
                }
                // Dropping `stdin` closes it: the helper's end of input.
            }
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(fail(format!("talking to it failed: {e}"))),
            Err(_) => {
                return Err(fail(format!("no answer within {:?}; killed", self.timeout)));
            }
        };
        if !output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stdout.trim() == HELPER_NOT_FOUND || stderr.trim() == HELPER_NOT_FOUND {
                return Ok(None);
            }
            let said = [stderr.trim(), stdout.trim()]
                .into_iter()
                .find(|s| !s.is_empty())
                .and_then(|s| s.lines().next())
                .map(|line| format!(": {}", truncate(line, 200)))
                .unwrap_or_default();
            return Err(fail(format!("get failed ({}){said}", output.status)));
        }
        // serde_json's messages may quote the offending value, which could
        // be the secret: report only where the answer went wrong.
        let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|e| {
            fail(format!(
                "answer is not credentials JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if answer.username.is_empty() && answer.secret.is_empty() {
            return Ok(None);
        }
        if answer.username == IDENTITY_TOKEN_USER {
            // An identity token is an OAuth2 refresh token to trade at the
            // registry's token server; oci-client cannot do that exchange
            // (its `RegistryAuth::Bearer` is sent to the registry as is).
            return Err(fail(
                "answered with an identity token, which is not supported; \
                 store a username and password for this registry instead"
                    .into(),
            ));
        }
        Ok(Some((answer.username, answer.secret)))
    }
}

/// The first executable file `name` in the absolute directories of
/// `search` (`PATH` syntax). Empty and relative entries are skipped, so
/// the working directory never supplies a helper.
fn find_program(name: &str, search: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// At most `max` characters of `s`, marked when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The server URL a helper stores `key`'s credentials under: Docker Hub's
/// index URL, else the `host[:port]` of `key` as written.
fn helper_server(key: &str) -> String {
    if canonical_host(key) == "docker.io" {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host_part(key).to_string()
    }
}

/// `https://h:5000/v1/` → `h:5000`, case kept.
fn host_part(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/` → `h:5000`.
fn canonical_host(key: &str) -> String {
    let host = host_part(key).to_ascii_lowercase();
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

    /// A directory of fake `docker-credential-*` helpers.
    struct FakeHelpers {
        dir: tempfile::TempDir,
    }

    impl FakeHelpers {
        fn new() -> FakeHelpers {
            FakeHelpers {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        /// `docker-credential-{name}` running the shell `body`.
        fn add(&self, name: &str, body: &str) {
            use std::os::unix::fs::PermissionsExt as _;
            let path = self.dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        /// A helper that answers any server URL, as user the URL it was
        /// given and as secret `from-{name}`.
        fn add_echo(&self, name: &str) {
            self.add(
                name,
                &format!(
                    r#"read -r url
printf '{{"ServerURL":"%s","Username":"%s","Secret":"from-{name}"}}\n' "$url" "$url""#
                ),
            );
        }

        /// A helper that never has credentials.
        fn add_empty(&self, name: &str) {
            self.add(
                name,
                "cat >/dev/null\necho 'credentials not found in native keychain'\nexit 1",
            );
        }

        fn helpers(&self, timeout: Duration) -> Helpers<'_> {
            Helpers {
                search: self.dir.path().as_os_str(),
                timeout,
            }
        }

        fn lookup(
            &self,
            config: &Path,
            registry: &str,
        ) -> Result<Option<(String, String)>, OciError> {
            self.lookup_within(config, registry, Duration::from_secs(10))
        }

        fn lookup_within(
            &self,
            config: &Path,
            registry: &str,
            timeout: Duration,
        ) -> Result<Option<(String, String)>, OciError> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(docker_config_lookup(
                    config,
                    registry,
                    &self.helpers(timeout),
                ))
        }
    }

    fn found(user: &str, secret: &str) -> Option<(String, String)> {
        Some((user.to_string(), secret.to_string()))
    }

    #[test]
    fn cred_helpers_beat_creds_store_beat_auths() {
        let fake = FakeHelpers::new();
        fake.add_echo("one");
        fake.add_echo("store");
        let (_d, path) = config(
            r#"{"credHelpers":{"127.0.0.1:5000":"one","index.docker.io":"one"},
                "credsStore":"store",
                "auths":{"127.0.0.1:5000":{"username":"u","password":"p"},
                         "ghcr.io":{"username":"u","password":"p"}}}"#,
        );
        assert_eq!(
            fake.lookup(&path, "127.0.0.1:5000").unwrap(),
            found("127.0.0.1:5000", "from-one")
        );
        // Docker Hub: matched by alias, asked for under its index URL.
        assert_eq!(
            fake.lookup(&path, "docker.io").unwrap(),
            found("https://index.docker.io/v1/", "from-one")
        );
        assert_eq!(
            fake.lookup(&path, "ghcr.io").unwrap(),
            found("ghcr.io", "from-store")
        );
        assert_eq!(
            fake.lookup(&path, "quay.io").unwrap(),
            found("quay.io", "from-store")
        );
    }

    #[test]
    fn empty_store_falls_back_to_auths_and_empty_cred_helper_is_anonymous() {
        let fake = FakeHelpers::new();
        fake.add_empty("none");
        let (_d, path) = config(
            r#"{"credsStore":"none",
                "auths":{"https://ghcr.io":{"username":"u","password":"p"},
                         "quay.io":{}}}"#,
        );
        assert_eq!(fake.lookup(&path, "ghcr.io").unwrap(), found("u", "p"));
        assert_eq!(fake.lookup(&path, "quay.io").unwrap(), None);
        assert_eq!(fake.lookup(&path, "docker.io").unwrap(), None);

        let (_d, path) = config(
            r#"{"credHelpers":{"ghcr.io":"none"},
                "auths":{"ghcr.io":{"username":"u","password":"p"}}}"#,
        );
        // The helper owns ghcr.io: its `auths` entry is not used.
        assert_eq!(fake.lookup(&path, "ghcr.io").unwrap(), None);
    }

    #[test]
    fn helper_failures_are_clear_errors_without_the_secret() {
        let fake = FakeHelpers::new();
        fake.add(
            "fails",
            "cat >/dev/null\necho 'keychain locked' >&2\nexit 3",
        );
        fake.add("badjson", r#"echo '{"Username":"u","Secret":hunter2}'"#);
        fake.add(
            "wrongtype",
            r#"echo '{"Username":"u","Secret":4242424242}'"#,
        );
        fake.add(
            "token",
            r#"echo '{"Username":"<token>","Secret":"hunter2"}'"#,
        );
        fake.add("hangs", "exec sleep 30");
        let (_d, path) = config(
            r#"{"credHelpers":{"a.io":"missing","b.io":"fails","c.io":"badjson",
                               "d.io":"wrongtype","e.io":"token","f.io":"hangs",
                               "g.io":"../escape"}}"#,
        );
        let err = |registry: &str| {
            let e = fake
                .lookup_within(&path, registry, Duration::from_millis(300))
                .unwrap_err();
            assert!(matches!(e, OciError::CredentialHelper { .. }), "{e:?}");
            let text = e.to_string();
            for secret in ["hunter2", "4242424242"] {
                assert!(!text.contains(secret), "{text}");
                assert!(!format!("{e:?}").contains(secret), "{e:?}");
            }
            assert!(!text.contains('\n'), "{text}");
            text
        };
        assert_eq!(
            err("a.io"),
            "credential helper docker-credential-missing for a.io: \
             docker-credential-missing not found on PATH"
        );
        assert_eq!(
            err("b.io"),
            "credential helper docker-credential-fails for b.io: \
             get failed (exit status: 3): keychain locked"
        );
        assert!(err("c.io").contains("not credentials JSON"));
        assert!(err("d.io").contains("not credentials JSON"));
        assert!(err("e.io").contains("identity token"));
        let started = std::time::Instant::now();
        assert!(err("f.io").contains("no answer within 300ms; killed"));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err("g.io").contains("not a valid helper name"));
    }

    #[test]
    fn helper_lookup_skips_relative_and_non_executable_entries() {
        use std::os::unix::fs::PermissionsExt as _;
        let fake = FakeHelpers::new();
        fake.add_echo("x");
        let name = "docker-credential-x";
        let dir = fake.dir.path();
        assert_eq!(find_program(name, dir.as_os_str()), Some(dir.join(name)));
        let mut search = OsString::from(".:relative:");
        search.push(dir.as_os_str());
        assert_eq!(find_program(name, &search), Some(dir.join(name)));
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_program(name, dir.as_os_str()), None);
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
