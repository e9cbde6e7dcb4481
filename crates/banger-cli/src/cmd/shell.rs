//! `banger vm shell VM`: a login shell through the agent, for images with
//! no sshd (busybox, distroless debugging): an exec with a PTY (resize,
//! Ctrl-C and the exit code come with the exec session), running root's
//! shell from the guest's `/etc/passwd` as a login shell, or `/bin/sh`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::client;

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
}

/// Finds root's shell with nothing but `sh` builtins (a minimal image may
/// have no awk or getent), falls back to `/bin/sh`, and execs it as a login
/// shell in root's home.
const LOGIN: &str = r#"s=/bin/sh
while IFS=: read -r u _ _ _ _ h sh; do
  if [ "$u" = root ]; then [ -x "$sh" ] && s=$sh; [ -d "$h" ] && cd "$h"; break; fi
done < /etc/passwd
exec "$s" -l"#;

pub async fn shell(a: ShellArgs) -> Result<ExitCode> {
    let c = client::daemon().await?;
    let size = crate::exec::terminal_size().unwrap_or(banger_proto::TtySize { rows: 24, cols: 80 });
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
    let req = banger_proto::ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), LOGIN.into()],
        env: vec![("TERM".into(), term)],
        cwd: None,
        user: None,
        tty: Some(size),
        stdin: true,
    };
    let code = crate::exec::run(&c, &a.reference, req, true, false, async { Ok(()) }).await?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}
