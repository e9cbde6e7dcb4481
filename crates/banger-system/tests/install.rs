//! `system install|status|restart|uninstall` against temporary install
//! roots. systemd is not PID 1 on test machines, so `systemctl` calls go
//! to a recording `Host`; the unit files themselves are checked by the real
//! `systemd-analyze verify`, and the no-systemd error by the real host.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_system::units::{self, DAEMON_TEMPLATE, HELPER_UNIT, SPLIT_DNS_UNIT};
use banger_system::{
    Host, InstallSpec, Owner, Probe, SplitDns, SystemError, Systemctl, SystemdHost, UnitState,
    install, restart, status, uninstall,
};

/// Records every `systemctl` call; answers probes from its fields.
#[derive(Default)]
struct Recorder {
    booted: bool,
    resolved: bool,
    bridge_up: bool,
    /// Fail the first call that matches.
    fail: Option<fn(&Systemctl) -> bool>,
    calls: RefCell<Vec<Systemctl>>,
}

impl Recorder {
    fn booted() -> Self {
        Self {
            booted: true,
            ..Self::default()
        }
    }
    fn take(&self) -> Vec<Systemctl> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl Host for Recorder {
    fn systemd_booted(&self) -> bool {
        self.booted
    }
    fn systemctl(&self, call: &Systemctl) -> Result<(), SystemError> {
        self.calls.borrow_mut().push(call.clone());
        if self.fail.is_some_and(|f| f(call)) {
            return Err(SystemError::Command {
                command: format!("systemctl {}", call.args().join(" ")),
                stderr: "Job for banger-helper.service failed".into(),
            });
        }
        Ok(())
    }
    fn unit_state(&self, unit: &str) -> UnitState {
        let active = match unit {
            "systemd-resolved.service" if self.resolved => "active",
            "systemd-resolved.service" => "inactive",
            _ => "active",
        };
        UnitState {
            load: Some("loaded".into()),
            active: Some(active.into()),
            enabled: Some("enabled".into()),
        }
    }
    fn link_exists(&self, _name: &str) -> bool {
        self.bridge_up
    }
    fn nft_table(&self, _family: &str, _name: &str) -> Probe {
        Probe::No
    }
    fn resolved_link_domains(&self, _link: &str) -> Result<Vec<String>, String> {
        if self.bridge_up && self.resolved {
            Ok(vec!["~vm".into()])
        } else {
            Err("Failed to resolve interface \"banger0\": No such device".into())
        }
    }
}

fn owner() -> Owner {
    Owner {
        uid: 1000,
        name: "alice".into(),
    }
}

/// A root with a unit dir holding someone else's unit, and a prefix whose
/// binaries exist (stand-ins: `systemd-analyze verify` and the install
/// check only need executable files).
fn fixture(tmp: &Path) -> InstallSpec {
    let root = tmp.join("root");
    let unit_dir = root.join("etc/systemd/system");
    fs::create_dir_all(unit_dir.join("multi-user.target.wants")).unwrap();
    fs::write(
        unit_dir.join("other.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    // The daemon's preserved runtime dir lands under <root>/run.
    fs::create_dir_all(root.join("run")).unwrap();
    let prefix = tmp.join("prefix");
    fs::create_dir_all(prefix.join("bin")).unwrap();
    for name in ["banger-helper", "bangerd", "resolvectl"] {
        let path = prefix.join("bin").join(name);
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut spec = InstallSpec::new(owner(), &prefix);
    spec.root = root;
    spec.resolvectl = prefix.join("bin/resolvectl");
    spec
}

/// Every path under `dir` with its mode and content (symlink targets for links).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(&path).unwrap()
            };
            out.insert(path, (meta.permissions().mode(), content));
        }
    }
    out
}

fn units(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    let analyze = banger_testkit::require_tool("systemd-analyze", "systemd");
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let dir = tmp.path().join("units");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(HELPER_UNIT), units::helper_unit(&spec)).unwrap();
    fs::write(dir.join(DAEMON_TEMPLATE), units::daemon_template(&spec)).unwrap();
    fs::write(dir.join(SPLIT_DNS_UNIT), units::split_dns_unit(&spec)).unwrap();
    // The instance the install enables, as systemd would load it.
    std::os::unix::fs::symlink(DAEMON_TEMPLATE, dir.join("bangerd@alice.service")).unwrap();
    // A control: the check below must be able to fail.
    fs::write(
        dir.join("broken.service"),
        "[Service]\nExecStart=/bin/true\nFrobnicate=yes\n",
    )
    .unwrap();

    let verify = |unit: &str| {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(dir.join(unit))
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for unit in [HELPER_UNIT, "bangerd@alice.service", SPLIT_DNS_UNIT] {
        let (ok, stderr) = verify(unit);
        assert!(ok && stderr.trim().is_empty(), "{unit}: {stderr}");
    }
    let (_, stderr) = verify("broken.service");
    assert!(
        stderr.contains("Frobnicate"),
        "the control unit must warn: {stderr}"
    );

    // systemd's own sandbox score (0 = locked down, 10 = exposed): the root
    // helper must stay well sandboxed; the daemon is lighter on purpose
    // (its VMMs inherit the sandbox).
    let exposure = |unit: &str| -> f64 {
        let out = Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        line.rsplit(": ")
            .next()
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unparsable: {line}"))
    };
    let helper = exposure(HELPER_UNIT);
    assert!(helper <= 3.0, "banger-helper.service exposure {helper}");
    let daemon = exposure("bangerd@alice.service");
    assert!(daemon <= 6.0, "bangerd@alice.service exposure {daemon}");
    let control = exposure("broken.service");
    assert!(control > 9.0, "an unsandboxed unit scores high: {control}");

    // What the units say matters as much as their syntax.
    let helper = units::helper_unit(&spec);
    let exec = format!(
        "ExecStart={}/bin/banger-helper --owner 1000 --socket /run/banger-helper/helper.sock --config /etc/banger/helper.toml --state /run/banger-helper/state.json",
        spec.prefix.display()
    );
    for line in [
        exec.as_str(),
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DeviceAllow=/dev/net/tun rw",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
    ] {
        assert!(
            helper.lines().any(|l| l == line),
            "helper unit lacks {line}"
        );
    }
    let daemon = units::daemon_template(&spec);
    for line in [
        "User=%i",
        "KillMode=process",
        "RuntimeDirectoryPreserve=yes",
    ] {
        assert!(
            daemon.lines().any(|l| l == line),
            "daemon unit lacks {line}"
        );
    }
    let split = units::split_dns_unit(&spec);
    let resolvectl = spec.resolvectl.display();
    for line in [
        format!("ExecStart={resolvectl} dns banger0 172.16.0.1"),
        format!("ExecStart={resolvectl} domain banger0 ~vm"),
        "WantedBy=sys-subsystem-net-devices-banger0.device".to_owned(),
    ] {
        assert!(
            split.lines().any(|l| l == line),
            "split-dns unit lacks {line}"
        );
    }
}

#[test]
fn install_then_uninstall_leaves_the_root_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let before = snapshot(&spec.root);
    let host = Recorder {
        resolved: true,
        ..Recorder::booted()
    };

    let report = install(&spec, &host).unwrap();
    let dir = spec.unit_dir();
    let mut want = vec![spec.root.join("etc/banger/helper.toml")];
    want.extend([HELPER_UNIT, DAEMON_TEMPLATE, SPLIT_DNS_UNIT].map(|n| dir.join(n)));
    assert_eq!(report.units, want);
    // Root's policy for the helper, from the owner's config.
    let policy = fs::read_to_string(spec.root.join("etc/banger/helper.toml")).unwrap();
    assert!(
        policy.contains("bridge_cidr = \"172.16.0.1/24\""),
        "{policy}"
    );
    assert_eq!(
        report.split_dns,
        SplitDns::Resolved {
            unit: SPLIT_DNS_UNIT.into()
        }
    );
    assert_eq!(
        host.take(),
        [
            Systemctl::DaemonReload,
            Systemctl::EnableNow(units(&[HELPER_UNIT, "bangerd@alice.service"])),
            // No bridge yet: enabled only, it starts when the bridge appears.
            Systemctl::Enable(units(&[SPLIT_DNS_UNIT])),
        ]
    );
    let mode = fs::metadata(dir.join(HELPER_UNIT))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    let st = status(&spec.root, &host).unwrap();
    assert_eq!(st.owner, Some(owner()));
    assert!(st.helper.installed && st.split_dns.installed);
    assert_eq!(st.daemon.as_ref().unwrap().unit, "bangerd@alice.service");
    assert_eq!(st.bridge.as_ref().unwrap().name, "banger0");
    let text = st.to_string();
    assert!(text.contains("owner:      alice (uid 1000)"), "{text}");
    assert!(
        text.contains("bangerd@alice.service active (enabled)"),
        "{text}"
    );
    assert!(text.contains("bridge:     banger0 absent"), "{text}");
    assert!(
        matches!(st.split_dns_registered, Some(Probe::Unknown(_))),
        "{:?}",
        st.split_dns_registered
    );

    assert_eq!(
        restart(&spec.root, &host).unwrap(),
        units(&[HELPER_UNIT, "bangerd@alice.service"])
    );
    host.take();

    // What a running daemon leaves in its preserved runtime dir.
    let run = spec.root.join("run/bangerd-1000/0123456789abcdef");
    fs::create_dir_all(&run).unwrap();
    fs::write(run.join("bangerd.sock"), "").unwrap();

    let report = uninstall(&spec.root, &host).unwrap();
    assert_eq!(report.removed.len(), 5, "{:?}", report.removed);
    assert_eq!(
        host.take(),
        [
            Systemctl::DisableNow(units(&[
                "bangerd@alice.service",
                SPLIT_DNS_UNIT,
                HELPER_UNIT
            ])),
            Systemctl::DaemonReload,
        ]
    );
    assert_eq!(snapshot(&spec.root), before);

    // A second uninstall finds nothing and does nothing.
    let again = uninstall(&spec.root, &host).unwrap();
    assert!(again.removed.is_empty() && again.disabled.is_empty());
    assert!(host.take().is_empty());
    assert!(status(&spec.root, &host).unwrap().owner.is_none());
}

#[test]
fn without_resolved_install_returns_the_line_to_add() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let host = Recorder::booted();
    let report = install(&spec, &host).unwrap();
    let SplitDns::Manual { hint } = &report.split_dns else {
        panic!("{:?}", report.split_dns);
    };
    assert!(hint.contains("server=/vm/172.16.0.1"), "{hint}");
    assert!(!spec.unit_dir().join(SPLIT_DNS_UNIT).exists());
    assert_eq!(
        host.take(),
        [
            Systemctl::DaemonReload,
            Systemctl::EnableNow(units(&[HELPER_UNIT, "bangerd@alice.service"])),
        ]
    );
}

#[test]
fn with_the_bridge_up_split_dns_starts_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let host = Recorder {
        resolved: true,
        bridge_up: true,
        ..Recorder::booted()
    };
    install(&spec, &host).unwrap();
    assert_eq!(
        host.take().last(),
        Some(&Systemctl::Start(units(&[SPLIT_DNS_UNIT])))
    );
    let st = status(&spec.root, &host).unwrap();
    assert_eq!(st.split_dns_registered, Some(Probe::Yes));
    assert!(st.to_string().contains("resolved:   registered"), "{st}");
}

#[test]
fn a_failed_install_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let before = snapshot(&spec.root);
    let host = Recorder {
        resolved: true,
        fail: Some(|c| matches!(c, Systemctl::EnableNow(_))),
        ..Recorder::booted()
    };
    let err = install(&spec, &host).unwrap_err().to_string();
    assert_eq!(
        err,
        "`systemctl enable --now banger-helper.service bangerd@alice.service` failed: Job for banger-helper.service failed"
    );
    assert_eq!(snapshot(&spec.root), before);
    let calls = host.take();
    assert_eq!(
        &calls[2..],
        [
            Systemctl::DisableNow(units(&[
                HELPER_UNIT,
                "bangerd@alice.service",
                SPLIT_DNS_UNIT
            ])),
            Systemctl::DaemonReload,
        ]
    );
}

#[test]
fn a_failed_reinstall_puts_the_old_units_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = fixture(tmp.path());
    install(&spec, &Recorder::booted()).unwrap();
    let before = snapshot(&spec.root);
    spec.bridge_addr = "10.9.0.1".parse().unwrap();
    spec.owner.uid = 1001;
    let host = Recorder {
        fail: Some(|c| matches!(c, Systemctl::EnableNow(_))),
        ..Recorder::booted()
    };
    install(&spec, &host).unwrap_err();
    assert_eq!(snapshot(&spec.root), before);
    // The units were there before: the rollback must not disable them.
    assert!(
        !host
            .take()
            .iter()
            .any(|c| matches!(c, Systemctl::DisableNow(_)))
    );
}

#[test]
fn bad_input_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let before = snapshot(&spec.root);
    let host = Recorder::booted();

    let mut missing = spec.clone();
    missing.prefix = tmp.path().join("nowhere");
    let err = install(&missing, &host).unwrap_err().to_string();
    assert!(
        err.contains("nowhere/bin/banger-helper: not an executable file"),
        "{err}"
    );

    let mut no_dir = spec.clone();
    no_dir.root = tmp.path().join("empty-root");
    let err = install(&no_dir, &host).unwrap_err().to_string();
    assert!(
        err.contains("empty-root/etc/systemd/system: no such directory"),
        "{err}"
    );

    let mut root_owner = spec.clone();
    root_owner.owner.uid = 0;
    assert!(install(&root_owner, &host).is_err());

    assert!(host.take().is_empty());
    assert_eq!(snapshot(&spec.root), before);
    let err = restart(&spec.root, &host).unwrap_err().to_string();
    assert!(err.contains("banger is not installed under"), "{err}");
}

#[test]
fn without_systemd_as_init_install_says_what_to_run() {
    let host = SystemdHost;
    if host.systemd_booted() {
        banger_testkit::skip(
            "systemd is PID 1 here; this test checks the error given where it is not",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture(tmp.path());
    let before = snapshot(&spec.root);
    let err = install(&spec, &host).unwrap_err();
    assert!(matches!(err, SystemError::NoSystemd { .. }), "{err:?}");
    let text = err.to_string();
    let foreground = format!(
        "sudo {}/bin/banger-helper --owner 1000 --socket /run/banger-helper/helper.sock",
        spec.prefix.display()
    );
    assert!(
        text.contains("systemd is not the init system here"),
        "{text}"
    );
    assert!(text.ends_with(&foreground), "{text}");
    assert_eq!(snapshot(&spec.root), before, "nothing written");

    // status still works, and says why the services cannot run.
    let st = status(&spec.root, &host).unwrap();
    assert!(!st.systemd);
    assert!(st.to_string().contains("systemd:    not the init system"));
}

#[test]
fn device_unit_names_match_systemd_escape() {
    let escape = banger_testkit::require_tool("systemd-escape", "systemd");
    for bridge in ["banger0", "ban-ger0", "br.1", "a_b", "x:y"] {
        let out = Command::new(&escape)
            .args(["--path", "--suffix=device"])
            .arg(format!("/sys/subsystem/net/devices/{bridge}"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(units::bridge_device_unit(bridge), want.trim(), "{bridge}");
    }
}
