//! `banger vm forward VM [HOST_IP:]HOST_PORT:GUEST_PORT...`: userspace TCP
//! forwarding through the agent, until Ctrl-C. No bridge, no root, no
//! firewall rule: each accepted connection becomes one `tcp` stream of the
//! daemon (the same route `vm proxy` uses), spliced both ways with
//! half-close, as many at once as clients come.
//!
//! The host side listens on 127.0.0.1 unless an address is given. Every
//! listener is bound before the first line is printed, so a port in use is
//! an error with nothing left listening. Port 0 picks a free port; the
//! printed line says which.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use banger_api::endpoints::VmsShow;
use clap::Args;
use tokio::net::{TcpListener, TcpStream};

use crate::client::{self, Client};

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// `[HOST_IP:]HOST_PORT:GUEST_PORT`, e.g. `8080:80` or `0.0.0.0:5432:5432`
    #[arg(required = true, value_parser = parse_spec)]
    ports: Vec<Spec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    listen: SocketAddr,
    guest_port: u16,
}

fn port(s: &str, what: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not a port number (0-65535)"))
}

fn parse_spec(s: &str) -> Result<Spec, String> {
    let (host, guest) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected [HOST_IP:]HOST_PORT:GUEST_PORT"))?;
    let guest_port = port(guest, "guest port")?;
    if guest_port == 0 {
        return Err(format!("{s:?}: the guest port cannot be 0"));
    }
    let (ip, host_port) = match host.rsplit_once(':') {
        Some((ip, p)) => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
            (ip, port(p, "host port")?)
        }
        None => (IpAddr::V4(Ipv4Addr::LOCALHOST), port(host, "host port")?),
    };
    Ok(Spec {
        listen: SocketAddr::new(ip, host_port),
        guest_port,
    })
}

pub async fn run(a: ForwardArgs) -> Result<ExitCode> {
    let c = client::daemon().await?;
    let vm = c.call::<VmsShow>(&[&a.reference], &()).await?;
    if vm.desired_state != banger_api::VmState::Running {
        bail!("vm {} is not running; start it first", vm.name);
    }
    let mut listeners = Vec::new();
    for spec in &a.ports {
        let l = TcpListener::bind(spec.listen)
            .await
            .with_context(|| format!("listen on {}", spec.listen))?;
        listeners.push((l, spec.guest_port));
    }
    for (l, guest_port) in &listeners {
        println!("forwarding {} -> {}:{guest_port}", l.local_addr()?, vm.name);
    }
    for (l, guest_port) in listeners {
        tokio::spawn(serve(
            l,
            c.clone(),
            vm.id.clone(),
            vm.name.clone(),
            guest_port,
        ));
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| anyhow!("wait for Ctrl-C: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn serve(
    l: TcpListener,
    client: Client,
    id: String,
    name: String,
    guest_port: u16,
) {
    loop {
        let (conn, peer) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, mostly: wait instead of spinning.
                eprintln!("banger: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (client, id, name) = (client.clone(), id.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = splice(conn, &client, &id, guest_port).await {
                eprintln!("banger: {peer} -> {name}:{guest_port}: {e:#}");
            }
        });
    }
}

async fn splice(mut conn: TcpStream, client: &Client, id: &str, port: u16) -> Result<()> {
    let _ = conn.set_nodelay(true);
    let mut guest = super::ssh::guest_tcp(client, id, port).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut guest)
        .await
        .map(|_| ())
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_spec("8080:80").unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.guest_port, 80);
        let s = parse_spec("0.0.0.0:5432:5432").unwrap();
        assert_eq!(s.listen, "0.0.0.0:5432".parse().unwrap());
        let s = parse_spec("[::1]:0:22").unwrap();
        assert_eq!(s.listen, "[::1]:0".parse().unwrap());
        assert!(parse_spec("80").is_err());
        assert!(parse_spec("x:80").unwrap_err().contains("host port"));
        assert!(parse_spec("1:0").unwrap_err().contains("cannot be 0"));
        assert!(parse_spec("nope:1:2").unwrap_err().contains("IP address"));
    }
}
