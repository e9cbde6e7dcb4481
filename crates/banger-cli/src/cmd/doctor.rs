//! `banger doctor`: the host checks, run here in the CLI rather than in
//! the daemon because it is what people run when the daemon will not start.
//! The network checks need the helper, `nft` and systemd-resolved asked
//! first; [`network_facts`] does that, banger-config judges.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use banger_api::CheckStatus;
use banger_config::Config;
use banger_config::doctor::{HelperFact, NetworkFacts, ResolvedFact, TablesFact};
use banger_helper::HostNetwork as _;
use banger_system::{Host as _, Probe, SystemdHost};

use super::system::{helper_socket, probe_helper};
use crate::output;

pub async fn run(json: bool) -> Result<ExitCode> {
    let config = Config::load()?;
    let host = banger_config::doctor::Host::real();
    let mut checks = banger_config::doctor::run(&config, &host);
    let facts = network_facts(&config).await;
    checks.extend(banger_config::doctor::network_checks(
        &config, &host, &facts,
    ));
    if json {
        output::json(&checks)?;
    } else {
        for c in &checks {
            let mark = match c.status {
                CheckStatus::Pass => "ok  ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            if c.fix.is_empty() {
                println!("{mark}  {:<12} {}", c.name, c.detail);
            } else {
                println!("{mark}  {:<12} {} -> {}", c.name, c.detail, c.fix);
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Ask the helper (what it says of itself and of the host, which it can
/// see as root), `nft` and systemd-resolved.
async fn network_facts(config: &Config) -> NetworkFacts {
    let probe = probe_helper(&helper_socket(config)).await;
    let helper = match (probe.version, probe.protocol, probe.owner) {
        (Some(version), Some(protocol), Some(owner)) => HelperFact::Reachable {
            socket: probe.socket,
            version,
            protocol,
            owner,
        },
        _ => HelperFact::Unreachable {
            socket: probe.socket,
            error: probe.error.unwrap_or_default(),
        },
    };
    let sys = SystemdHost;
    // Listing nftables needs CAP_NET_ADMIN; the helper has it and says.
    let from_helper = match &helper {
        HelperFact::Reachable { socket, .. } => banger_helper::HelperClient::lazy(socket)
            .status()
            .await
            .ok(),
        HelperFact::Unreachable { .. } => None,
    };
    let nft_table = match sys.nft_table(banger_system::NFT_FAMILY, banger_system::NFT_TABLE) {
        Probe::Yes => Ok(true),
        Probe::No => Ok(false),
        Probe::Unknown(why) => match &from_helper {
            Some(st) => Ok(st.tables != banger_helper::TableState::NotWanted),
            None => Err(why),
        },
    };
    // Only the helper knows what the tables should hold.
    let nft_match = from_helper.map(|st| match st.tables {
        banger_helper::TableState::Matches => TablesFact::Match {
            repairs: st.repairs,
        },
        banger_helper::TableState::NotWanted => TablesFact::NotWanted,
        other => TablesFact::Differ(super::system::describe_tables(&other)),
    });
    // resolved keeps its runtime state here while it runs (sd_booted-style:
    // a resolved merely installed never makes it).
    let resolved = if !Path::new("/run/systemd/resolve/resolv.conf").exists() {
        ResolvedFact::NotRunning
    } else {
        match sys.resolved_link_domains(&config.network.bridge) {
            Ok(d) => ResolvedFact::Domains(d),
            Err(why) => ResolvedFact::Unknown(why),
        }
    };
    NetworkFacts {
        euid: nix::unistd::geteuid().as_raw(),
        protocol: banger_helper::PROTOCOL_VERSION,
        helper,
        nft_table,
        nft_match,
        resolved,
        split_dns_unit: Path::new("/etc/systemd/system")
            .join(banger_system::units::SPLIT_DNS_UNIT)
            .is_file(),
    }
}
