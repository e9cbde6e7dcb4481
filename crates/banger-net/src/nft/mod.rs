//! banger's nftables tables, `inet banger` (NAT, published ports, egress,
//! what guests may reach on the host) and `bridge banger` (what each tap
//! may send: its guest's MAC and address only), built from a desired
//! state ([`RuleSet`]) by [`render`] and run through `nft -f -`, one
//! transaction per change. banger never touches another table.
//!
//! The whole state is written at once ([`apply`]) when the network comes
//! up and when the tables must be repaired; a guest starting or stopping
//! adds or removes only its own elements ([`attach`], [`detach`]), so
//! the cost of a start does not grow with the number of guests. Every
//! `nft` process banger starts is remembered ([`ours`]) so that the
//! change monitor ([`crate::monitor`]) can tell banger's own transactions
//! from anyone else's. [`verify`] compares the tables in the kernel with
//! the desired state, for `doctor`, `system status` and the repair.

pub mod render;
mod verify;

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::NetError;
use crate::guest::{Guest, GuestNet, Resolved};

pub use verify::{TableCheck, verify};

pub use crate::names::TABLE;

/// The whole desired content of both tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub net: GuestNet,
    pub guests: Vec<Guest>,
    /// Drop forwarding between interfaces that are not bridges: IPv4
    /// forwarding was off before banger turned it on.
    pub forward_guard: bool,
}

/// Replace both tables with what `rules` describes, atomically.
pub async fn apply(rules: &RuleSet) -> Result<(), NetError> {
    run_script("apply", &render::full(rules)).await
}

/// Add one guest's elements (and chains, for an allow list).
pub async fn attach(guest: &Guest) -> Result<(), NetError> {
    run_script("add a guest to", &render::attach(guest)).await
}

/// Replace `old`'s elements with `new`'s (the same tap) in one
/// transaction.
pub async fn replace(old: &Guest, new: &Guest) -> Result<(), NetError> {
    let script = format!("{}{}", render::detach(old), render::attach(new));
    run_script("update a guest in", &script).await
}

/// Remove what [`attach`] added for `guest`.
pub async fn detach(guest: &Guest) -> Result<(), NetError> {
    run_script("remove a guest from", &render::detach(guest)).await
}

/// Allow `guest` the addresses a DNS answer gave (a no-op for a guest
/// without an allow list).
pub async fn allow_resolved(guest: &Guest, answers: &[Resolved]) -> Result<(), NetError> {
    match render::resolved(guest, answers) {
        Some(script) => run_script("allow resolved addresses in", &script).await,
        None => Ok(()),
    }
}

/// Delete both tables; missing ones are fine.
pub async fn remove() -> Result<(), NetError> {
    run_script("remove", &render::remove()).await
}

/// Whether either of banger's tables exists.
pub async fn tables_present() -> Result<bool, NetError> {
    for family in ["inet", "bridge"] {
        if list_table(family).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `nft -j list table FAMILY banger`, parsed; `None` when it does not exist.
pub(crate) async fn list_table(family: &str) -> Result<Option<serde_json::Value>, NetError> {
    let out = tokio::process::Command::new(nft_program())
        .args(["-j", "list", "table", family, TABLE])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| nft_error("list", e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file") {
            return Ok(None);
        }
        return Err(nft_error("list", one_line(&err)));
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| nft_error("list", format!("unreadable JSON: {e}")))
}

/// The nft binary: absolute where we know it, so a service with a bare
/// PATH still finds it.
fn nft_program() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft")
}

fn nft_error(op: &'static str, detail: String) -> NetError {
    NetError::Nft {
        op,
        table: TABLE.to_string(),
        detail,
    }
}

fn one_line(s: &str) -> String {
    s.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Run `script` as one `nft -f -` transaction: all of it or nothing.
async fn run_script(op: &'static str, script: &str) -> Result<(), NetError> {
    let mut child = tokio::process::Command::new(nft_program())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| nft_error(op, e.to_string()))?;
    if let Some(pid) = child.id() {
        remember(pid);
    }
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let write = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| nft_error(op, e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(nft_error(op, first_error(&err)));
    }
    write.map_err(|e| nft_error(op, e.to_string()))
}

/// nft prints each error as three lines (message, the offending line, a
/// caret line); keep the messages with their lines, one line in all.
fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(msg) = l.split_once("Error: ").map(|(_, m)| m) {
            let what = lines.get(i + 1).map(|s| s.trim()).unwrap_or("");
            out.push(if what.is_empty() {
                msg.to_string()
            } else {
                format!("{msg} (in `{what}`)")
            });
        }
    }
    if out.is_empty() {
        one_line(stderr)
    } else {
        out.join("; ")
    }
}

/// How long an `nft` process of ours stays recognised after it started:
/// the monitor reads its events shortly after, never later than this.
const OURS_FOR: Duration = Duration::from_secs(30);

static OURS: Mutex<VecDeque<(u32, Instant)>> = Mutex::new(VecDeque::new());

fn remember(pid: u32) {
    let mut ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    while ours.front().is_some_and(|(_, t)| now - *t > OURS_FOR) {
        ours.pop_front();
    }
    ours.push_back((pid, now));
}

/// Whether the process `pid` that made an nftables change was one this
/// process started (or this process itself).
pub fn ours(pid: u32) -> bool {
    pid == std::process::id()
        || OURS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(p, _)| *p == pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TapName;
    use crate::guest::{AllowRule, AllowTarget, Egress, HostPort, PortRange, Proto};

    fn guest(id: &str, ip: &str, egress: Egress, ports: Vec<HostPort>) -> Guest {
        Guest {
            tap: TapName::for_vm(id).unwrap(),
            ip: ip.parse().unwrap(),
            mac: "02:01:23:45:67:89".parse().unwrap(),
            egress,
            ports,
        }
    }

    fn rules() -> RuleSet {
        RuleSet {
            net: GuestNet {
                bridge: "banger0".into(),
                cidr: "172.16.0.1/24".parse().unwrap(),
            },
            guests: vec![
                guest(
                    "0123456789abcdef",
                    "172.16.0.2",
                    Egress::None,
                    vec![HostPort {
                        proto: Proto::Tcp,
                        host_ip: None,
                        host_port: 8080,
                        guest_port: 80,
                    }],
                ),
                guest(
                    "fedcba9876543210",
                    "172.16.0.3",
                    Egress::Allow(vec![
                        AllowRule {
                            target: AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
                            ports: Some(PortRange {
                                first: 443,
                                last: 443,
                            }),
                            proto: Some(Proto::Tcp),
                        },
                        AllowRule {
                            target: AllowTarget::Name("example.test".into()),
                            ports: None,
                            proto: None,
                        },
                    ]),
                    vec![],
                ),
            ],
            forward_guard: true,
        }
    }

    #[test]
    fn the_script_names_only_banger_tables() {
        let s = render::full(&rules());
        for line in s.lines().filter(|l| !l.starts_with('\t') && *l != "}") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let family = words
                .iter()
                .position(|w| *w == "inet" || *w == "bridge")
                .unwrap_or_else(|| panic!("no family: {line}"));
            assert_eq!(words.get(family + 1), Some(&TABLE), "{line}");
        }
        assert!(s.contains("8080 : 172.16.0.2 . 80"), "{s}");
        assert!(s.contains("172.16.0.2 : drop"), "{s}");
        assert!(s.contains("jump e_fedcba987654"), "{s}");
        assert!(
            s.contains("ip daddr 10.0.0.0/8 tcp dport 443 accept"),
            "{s}"
        );
        assert!(s.contains("meta iifkind != \"bridge\""), "{s}");
    }

    #[test]
    fn detach_removes_what_attach_added() {
        let r = rules();
        for g in &r.guests {
            let add = render::attach(g);
            let del = render::detach(g);
            let adds = add.lines().filter(|l| l.starts_with("add element")).count();
            let dels = del
                .lines()
                .filter(|l| l.starts_with("delete element"))
                .count();
            assert_eq!(adds, dels, "{add}\n{del}");
            let chains = add.lines().filter(|l| l.starts_with("add chain")).count();
            let gone = del
                .lines()
                .filter(|l| l.starts_with("delete chain"))
                .count();
            assert_eq!(chains, gone);
        }
    }

    #[test]
    fn resolved_addresses_get_clamped_timeouts_in_both_tables() {
        let r = rules();
        let answers = [
            Resolved {
                ip: "10.200.0.2".parse().unwrap(),
                port: None,
                proto: None,
                ttl_s: 5,
            },
            Resolved {
                ip: "10.200.0.3".parse().unwrap(),
                port: Some(443),
                proto: None,
                ttl_s: 3600,
            },
        ];
        assert!(
            render::resolved(&r.guests[0], &answers).is_none(),
            "no allow list"
        );
        let s = render::resolved(&r.guests[1], &answers).unwrap();
        assert!(
            s.contains("add element inet banger d_fedcba987654 { 10.200.0.2 timeout 60s }"),
            "{s}"
        );
        assert!(
            s.contains("add element bridge banger d_fedcba987654"),
            "{s}"
        );
        assert!(
            s.contains(
                "10.200.0.3 . tcp . 443 timeout 3600s, 10.200.0.3 . udp . 443 timeout 3600s"
            ),
            "{s}"
        );
    }

    #[test]
    fn nft_errors_become_one_line() {
        let err = "/dev/stdin:2:42-49: Error: interval overlaps with an existing one\nadd element inet banger h { 10.9.9.9 }\n      ^^^^\n";
        assert_eq!(
            first_error(err),
            "interval overlaps with an existing one (in `add element inet banger h { 10.9.9.9 }`)"
        );
    }
}
