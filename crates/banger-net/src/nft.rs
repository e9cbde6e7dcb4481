//! banger's nftables table, `inet banger`, built from a desired state
//! ([`RuleSet`]) and replaced atomically in one `nft -j -f -` transaction
//! through the nftables JSON API. banger never edits a rule in place and
//! never touches another table.
//!
//! The table, for bridge `B` with address `A` in network `N`:
//!
//! ```text
//! chain prerouting  (nat, prerouting, dstnat)   one rule per published port:
//!     [ip daddr HOST_IP | meta nfproto ipv4] fib daddr type local PROTO dport HP dnat ip to GUEST:GP
//! chain output      (nat, output, dstnat)       the same rules, for clients on the host itself
//!                                               (127.0.0.1 and the host's own addresses)
//! chain postrouting (nat, postrouting, srcnat)
//!     ip saddr N oifname != B masquerade               guests reach the outside
//!     oifname B ip saddr 127.0.0.0/8 masquerade        host loopback clients of a published port
//!     ip saddr N oifname B ct status dnat masquerade   a guest using a published port (hairpin)
//! chain forward     (filter, forward, filter)
//!     iifname B accept                                 guests out, and guest to guest
//!     oifname B ct state established,related accept    replies back in
//!     oifname B ct status dnat accept                  published ports
//!     oifname B drop                                   nothing else reaches a guest
//! chain input       (filter, input, filter)
//!     iifname != B iifname != lo ip daddr A udp/tcp dport 53 drop
//!                                                      DNS only for guests and the host itself
//!     iifname B ct state established,related accept    replies to the host's own connections
//!     iifname B ip daddr A udp dport 53 accept         DNS on the bridge address
//!     iifname B ip daddr A tcp dport 53 accept
//!     iifname B icmp type echo-request accept          guests may ping their gateway
//!     iifname B drop                                   sshd, the daemon, all else: unreachable from guests
//! ```
//!
//! Reaching a published port on 127.0.0.1 needs two things besides the
//! output-hook DNAT: `route_localnet` on the bridge (the kernel otherwise
//! refuses to route a packet with a loopback source out of a non-loopback
//! device after the DNAT), and the masquerade of 127.0.0.0/8 out of the
//! bridge (the guest would otherwise answer 127.0.0.1, i.e. itself). See
//! [`crate::sysctl::enable_route_localnet`].
//!
//! A guest can reach another guest's published port on the host's
//! address (the hairpin masquerade makes the answer come back through the
//! host), but not its own: after the DNAT that packet has source =
//! destination, which the kernel's routing drops. It can use its own
//! address and guest port instead.
//!
//! A packet must be accepted by every table at a hook: a drop elsewhere
//! (another firewall's forward policy) still wins over these accepts.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix,
};
use nftables::helper::{DEFAULT_ARGS, NftablesError, apply_ruleset_with_args_async};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::{Deserialize, Serialize};

use crate::{NetError, validate_ifname};

/// The one table banger owns.
pub const TABLE: &str = "banger";

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `[host_ip:]host_port -> guest_ip:guest_port`, like `docker -p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    pub proto: Proto,
    /// Only this host address; `None` = every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_ip: Ipv4Addr,
    pub guest_port: u16,
}

/// The whole desired content of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The bridge the guests are on.
    pub bridge: String,
    /// The bridge's address and the guests' network, e.g. `172.16.0.1/24`.
    pub cidr: Ipv4Net,
    pub ports: Vec<PublishedPort>,
}

impl RuleSet {
    /// Refuse what would give a wrong or ambiguous table: a bad bridge
    /// name, a guest outside the network, port 0, a port published twice.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_ifname(&self.bridge)?;
        let bad = |detail: String| NetError::Nft {
            op: "validate rules for",
            table: TABLE.to_string(),
            detail,
        };
        for (i, p) in self.ports.iter().enumerate() {
            if p.host_port == 0 || p.guest_port == 0 {
                return Err(bad(format!("port 0 in {}", describe(p))));
            }
            if !self.cidr.contains(&p.guest_ip) || p.guest_ip == self.cidr.addr() {
                return Err(bad(format!(
                    "guest address {} of {} is not a guest of {}",
                    p.guest_ip,
                    describe(p),
                    self.cidr
                )));
            }
            // The same port on two distinct addresses is fine; on one
            // address, or where either means every address, the first
            // rule would hide the second.
            let overlaps = |q: &PublishedPort| {
                q.proto == p.proto
                    && q.host_port == p.host_port
                    && (q.host_ip.is_none() || p.host_ip.is_none() || q.host_ip == p.host_ip)
            };
            if self.ports[..i].iter().any(overlaps) {
                return Err(bad(format!(
                    "host port {}/{} is published twice",
                    p.host_port,
                    p.proto.as_str()
                )));
            }
        }
        Ok(())
    }
}

fn describe(p: &PublishedPort) -> String {
    let host = p.host_ip.map(|i| format!("{i}:")).unwrap_or_default();
    format!(
        "{host}{}->{}:{}/{}",
        p.host_port,
        p.guest_ip,
        p.guest_port,
        p.proto.as_str()
    )
}

/// Replace `inet banger` with the table `rules` describes, atomically.
pub async fn apply_rules(rules: &RuleSet) -> Result<(), NetError> {
    rules.validate()?;
    let mut batch = Batch::new();
    reset_table(&mut batch);
    build(&mut batch, rules);
    run("apply", &batch.to_nftables()).await
}

/// Delete `inet banger`; a missing table is fine.
pub async fn remove_rules() -> Result<(), NetError> {
    let mut batch = Batch::new();
    batch.add(table());
    batch.delete(table());
    run("remove", &batch.to_nftables()).await
}

/// Whether `inet banger` exists.
pub async fn rules_present() -> Result<bool, NetError> {
    let out = tokio::process::Command::new(nft_program())
        .args(["-j", "list", "table", "inet", TABLE])
        .output()
        .await
        .map_err(|e| NetError::Nft {
            op: "list",
            table: TABLE.to_string(),
            detail: e.to_string(),
        })?;
    Ok(out.status.success())
}

/// The nft binary: absolute where we know it, so a service with a bare
/// PATH still finds it.
fn nft_program() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft")
}

async fn run(op: &'static str, nft: &Nftables<'_>) -> Result<(), NetError> {
    apply_ruleset_with_args_async(nft, Some(nft_program()), DEFAULT_ARGS)
        .await
        .map_err(|e| NetError::Nft {
            op,
            table: TABLE.to_string(),
            detail: match e {
                NftablesError::NftFailed { stderr, .. } => stderr.trim().replace('\n', "; "),
                other => other.to_string(),
            },
        })
}

fn table<'a>() -> NfListObject<'a> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    })
}

/// `add table; delete table; add table`: the transaction starts from an
/// empty table whether or not one existed.
fn reset_table(batch: &mut Batch<'_>) {
    batch.add(table());
    batch.delete(table());
    batch.add(table());
}

fn build<'a>(batch: &mut Batch<'a>, rules: &'a RuleSet) {
    let b = rules.bridge.as_str();
    let chains: [(&str, NfChainType, NfHook, i32); 5] = [
        ("prerouting", NfChainType::NAT, NfHook::Prerouting, -100),
        ("output", NfChainType::NAT, NfHook::Output, -100),
        ("postrouting", NfChainType::NAT, NfHook::Postrouting, 100),
        ("forward", NfChainType::Filter, NfHook::Forward, 0),
        ("input", NfChainType::Filter, NfHook::Input, 0),
    ];
    for (name, ty, hook, prio) in chains {
        batch.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }
    let mut rule = |chain: &'static str, expr: Vec<Statement<'a>>| {
        batch.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: chain.into(),
            expr: Cow::Owned(expr),
            ..Rule::default()
        }));
    };

    for p in &rules.ports {
        for chain in ["prerouting", "output"] {
            let first = match p.host_ip {
                Some(ip) => eq(payload("ip", "daddr"), s(ip.to_string())),
                None => eq(meta(MetaKey::Nfproto), s("ipv4".to_string())),
            };
            rule(
                chain,
                vec![
                    first,
                    eq(fib_daddr_type(), s("local".to_string())),
                    eq(payload(p.proto.as_str(), "dport"), num(p.host_port)),
                    Statement::DNAT(Some(NAT {
                        addr: Some(s(p.guest_ip.to_string())),
                        family: Some(NATFamily::IP),
                        port: Some(num(p.guest_port)),
                        flags: None,
                    })),
                ],
            );
        }
    }

    let net = rules.cidr.trunc();
    rule(
        "postrouting",
        vec![
            eq(payload("ip", "saddr"), prefix(net)),
            neq(meta(MetaKey::Oifname), b),
            Statement::Masquerade(None),
        ],
    );
    rule(
        "postrouting",
        vec![
            eq(meta(MetaKey::Oifname), b),
            eq(
                payload("ip", "saddr"),
                prefix(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("valid /8")),
            ),
            Statement::Masquerade(None),
        ],
    );
    // Not `iifname`: postrouting has no input interface (it never
    // matches there); a guest source going back out the bridge after a
    // DNAT is the same thing.
    rule(
        "postrouting",
        vec![
            eq(payload("ip", "saddr"), prefix(net)),
            eq(meta(MetaKey::Oifname), b),
            ct_in("status", &["dnat"]),
            Statement::Masquerade(None),
        ],
    );

    rule("forward", vec![eq(meta(MetaKey::Iifname), b), accept()]);
    rule(
        "forward",
        vec![
            eq(meta(MetaKey::Oifname), b),
            ct_in("state", &["established", "related"]),
            accept(),
        ],
    );
    rule(
        "forward",
        vec![
            eq(meta(MetaKey::Oifname), b),
            ct_in("status", &["dnat"]),
            accept(),
        ],
    );
    rule("forward", vec![eq(meta(MetaKey::Oifname), b), drop()]);

    rule(
        "input",
        vec![
            eq(meta(MetaKey::Iifname), b),
            ct_in("state", &["established", "related"]),
            accept(),
        ],
    );
    // The DNS server on the bridge address answers only the guests and
    // the host itself (which reaches its own addresses over `lo`, from
    // whichever of them the kernel picks): never an open resolver for
    // whoever else routes to the bridge address.
    for proto in ["udp", "tcp"] {
        rule(
            "input",
            vec![
                neq(meta(MetaKey::Iifname), b),
                neq(meta(MetaKey::Iifname), "lo"),
                eq(payload("ip", "daddr"), s(rules.cidr.addr().to_string())),
                eq(payload(proto, "dport"), num(53)),
                drop(),
            ],
        );
    }
    for proto in ["udp", "tcp"] {
        rule(
            "input",
            vec![
                eq(meta(MetaKey::Iifname), b),
                eq(payload("ip", "daddr"), s(rules.cidr.addr().to_string())),
                eq(payload(proto, "dport"), num(53)),
                accept(),
            ],
        );
    }
    rule(
        "input",
        vec![
            eq(meta(MetaKey::Iifname), b),
            eq(payload("icmp", "type"), s("echo-request".to_string())),
            accept(),
        ],
    );
    rule("input", vec![eq(meta(MetaKey::Iifname), b), drop()]);
}

fn s<'a>(v: String) -> Expression<'a> {
    Expression::String(Cow::Owned(v))
}

fn num<'a>(v: u16) -> Expression<'a> {
    Expression::Number(u32::from(v))
}

fn meta<'a>(key: MetaKey) -> Expression<'a> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload<'a>(protocol: &'static str, field: &'static str) -> Expression<'a> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn prefix<'a>(net: Ipv4Net) -> Expression<'a> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn fib_daddr_type<'a>() -> Expression<'a> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }))
}

fn ct_in<'a>(key: &'static str, values: &[&'static str]) -> Statement<'a> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: key.into(),
            family: None,
            dir: None,
        })),
        right: Expression::List(
            values
                .iter()
                .map(|v| Expression::String((*v).into()))
                .collect(),
        ),
        op: Operator::IN,
    })
}

fn eq<'a>(left: Expression<'a>, right: impl Into<Expr<'a>>) -> Statement<'a> {
    Statement::Match(Match {
        left,
        right: right.into().0,
        op: Operator::EQ,
    })
}

fn neq<'a>(left: Expression<'a>, right: impl Into<Expr<'a>>) -> Statement<'a> {
    Statement::Match(Match {
        left,
        right: right.into().0,
        op: Operator::NEQ,
    })
}

fn accept<'a>() -> Statement<'a> {
    Statement::Accept(None)
}

fn drop<'a>() -> Statement<'a> {
    Statement::Drop(None)
}

/// Lets `eq`/`neq` take an interface name or a built expression.
struct Expr<'a>(Expression<'a>);

impl<'a> From<Expression<'a>> for Expr<'a> {
    fn from(e: Expression<'a>) -> Self {
        Expr(e)
    }
}

impl<'a> From<&'a str> for Expr<'a> {
    fn from(v: &'a str) -> Self {
        Expr(Expression::String(Cow::Borrowed(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ports: Vec<PublishedPort>) -> RuleSet {
        RuleSet {
            bridge: "banger0".into(),
            cidr: "172.16.0.1/24".parse().unwrap(),
            ports,
        }
    }

    fn port(host_port: u16, guest: &str) -> PublishedPort {
        PublishedPort {
            proto: Proto::Tcp,
            host_ip: None,
            host_port,
            guest_ip: guest.parse().unwrap(),
            guest_port: 80,
        }
    }

    #[test]
    fn validation_refuses_ambiguous_rules() {
        assert!(rules(vec![port(8080, "172.16.0.2")]).validate().is_ok());
        let e = rules(vec![port(8080, "10.0.0.2")]).validate().unwrap_err();
        assert!(e.to_string().contains("not a guest"), "{e}");
        let e = rules(vec![port(8080, "172.16.0.1")])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("not a guest"), "{e}");
        let e = rules(vec![port(8080, "172.16.0.2"), port(8080, "172.16.0.3")])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("published twice"), "{e}");
        let mut on_lo = port(8080, "172.16.0.3");
        on_lo.host_ip = Some(Ipv4Addr::LOCALHOST);
        let mut on_other = on_lo.clone();
        on_other.host_ip = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert!(rules(vec![on_lo.clone(), on_other]).validate().is_ok());
        let e = rules(vec![port(8080, "172.16.0.2"), on_lo])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("published twice"), "{e}");
        let e = rules(vec![port(0, "172.16.0.2")]).validate().unwrap_err();
        assert!(e.to_string().contains("port 0"), "{e}");
    }

    #[test]
    fn the_batch_names_only_banger_table() {
        let r = rules(vec![port(8080, "172.16.0.2")]);
        let mut batch = Batch::new();
        reset_table(&mut batch);
        build(&mut batch, &r);
        let json = serde_json::to_value(batch.to_nftables()).unwrap();
        let objs = json["nftables"].as_array().unwrap();
        for o in objs {
            let (_, body) = o.as_object().unwrap().iter().next().unwrap();
            let (_, obj) = body.as_object().unwrap().iter().next().unwrap();
            let table = obj.get("table").or_else(|| obj.get("name")).unwrap();
            assert_eq!(table, TABLE, "{o}");
        }
        assert!(json.to_string().contains("\"dnat\""));
    }
}
