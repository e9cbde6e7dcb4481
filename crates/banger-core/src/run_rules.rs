//! Docker's `run` rules: what an exec runs when the client asks for the
//! image's config to apply (`POST /v1/vms/{ref}/exec?image_config=true`,
//! which `banger vm run` sends).
//!
//! They live in the daemon, not the CLI, so every API client gets the same
//! behaviour: the argv is the image's `Entrypoint` followed by the given
//! arguments, or by the image's `Cmd` when none are given (`/bin/sh` when
//! all three are empty); the image's `Env` comes first and the request's
//! variables override it; the image's `WorkingDir` and `User` apply unless
//! the request names its own.

use banger_api::ImageConfig;
use banger_proto::ExecRequest;

use crate::Services;
use crate::error::CoreResult;

/// The shell run when neither the image nor the request names a command.
pub const DEFAULT_COMMAND: &str = "/bin/sh";

/// `req` with the image's config applied (see the module doc).
pub fn apply_image_config(cfg: &ImageConfig, req: ExecRequest) -> ExecRequest {
    let mut argv = cfg.entrypoint.clone();
    argv.extend(if req.argv.is_empty() {
        cfg.cmd.clone()
    } else {
        req.argv
    });
    if argv.is_empty() {
        argv.push(DEFAULT_COMMAND.to_string());
    }
    // OCI `Env` entries are `KEY=VALUE`; one without `=` or with an empty
    // key means nothing to execve and is skipped rather than failing a run.
    let mut env: Vec<(String, String)> = cfg
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(req.env);
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    ExecRequest {
        argv,
        env,
        cwd: req.cwd.or_else(|| non_empty(&cfg.working_dir)),
        user: req.user.or_else(|| non_empty(&cfg.user)),
        tty: req.tty,
        stdin: req.stdin,
    }
}

impl Services {
    /// What an exec in VM `reference` runs: `req` as given, or with the
    /// config of the VM's image applied when `image_config` is set.
    pub fn exec_request(
        &self,
        reference: &str,
        req: ExecRequest,
        image_config: bool,
    ) -> CoreResult<ExecRequest> {
        if !image_config {
            return Ok(req);
        }
        let vm = self.vms.get(reference)?;
        let image = self.images.get(&vm.image_id)?;
        Ok(apply_image_config(&image.config, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn app() -> ImageConfig {
        ImageConfig {
            env: strings(&["PATH=/usr/bin:/bin", "GREETING=image", "JUNK", "=nokey"]),
            working_dir: Some("/srv".into()),
            user: Some("app:app".into()),
            entrypoint: strings(&["/entry", "--flag"]),
            cmd: strings(&["default-arg"]),
        }
    }

    #[test]
    fn entrypoint_then_cmd_when_no_arguments() {
        let out = apply_image_config(&app(), req(&[]));
        assert_eq!(out.argv, strings(&["/entry", "--flag", "default-arg"]));
    }

    #[test]
    fn arguments_replace_cmd_but_not_entrypoint() {
        let out = apply_image_config(&app(), req(&["a", "b"]));
        assert_eq!(out.argv, strings(&["/entry", "--flag", "a", "b"]));
    }

    #[test]
    fn cmd_alone_or_the_shell() {
        let cfg = ImageConfig {
            cmd: strings(&["/bin/date"]),
            ..ImageConfig::default()
        };
        assert_eq!(
            apply_image_config(&cfg, req(&[])).argv,
            strings(&["/bin/date"])
        );
        assert_eq!(
            apply_image_config(&cfg, req(&["id"])).argv,
            strings(&["id"])
        );
        let empty = ImageConfig::default();
        assert_eq!(
            apply_image_config(&empty, req(&[])).argv,
            strings(&[DEFAULT_COMMAND])
        );
    }

    #[test]
    fn image_env_first_request_env_overrides() {
        let mut r = req(&["env"]);
        r.env = vec![("GREETING".into(), "cli".into())];
        let out = apply_image_config(&app(), r);
        assert_eq!(
            out.env,
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("GREETING".to_string(), "image".to_string()),
                ("GREETING".to_string(), "cli".to_string()),
            ],
            "malformed image entries dropped, the request's last so it wins"
        );
    }

    #[test]
    fn workdir_and_user_from_the_image_unless_given() {
        let out = apply_image_config(&app(), req(&[]));
        assert_eq!(out.cwd.as_deref(), Some("/srv"));
        assert_eq!(out.user.as_deref(), Some("app:app"));
        let mut r = req(&[]);
        r.cwd = Some("/tmp".into());
        r.user = Some("0".into());
        let out = apply_image_config(&app(), r);
        assert_eq!(out.cwd.as_deref(), Some("/tmp"));
        assert_eq!(out.user.as_deref(), Some("0"));
        // An empty WorkingDir / User in the image means "not set".
        let cfg = ImageConfig {
            working_dir: Some(String::new()),
            user: Some(String::new()),
            ..ImageConfig::default()
        };
        let out = apply_image_config(&cfg, req(&[]));
        assert_eq!((out.cwd, out.user), (None, None));
    }

    #[test]
    fn tty_and_stdin_pass_through() {
        let mut r = req(&["sh"]);
        r.tty = Some(banger_proto::TtySize { rows: 10, cols: 20 });
        r.stdin = true;
        let out = apply_image_config(&ImageConfig::default(), r.clone());
        assert_eq!((out.tty, out.stdin), (r.tty, true));
    }
}
