//! Every request body the Firecracker driver builds is checked against the
//! official API description (`shared/firecracker/firecracker.yaml`, next to
//! the workspace): the schema of the path + method is found, then the body
//! is validated with a small JSON-schema validator covering the subset the
//! file uses (type, required, properties, additionalProperties, enum,
//! minimum/maximum, items, $ref). Unknown properties are errors even where
//! the file does not say `additionalProperties: false`: Firecracker rejects
//! them.

use std::path::PathBuf;

use banger_vmm::firecracker::api::{self, ActionType, ApiRequest};
use banger_vmm::{DiskRole, DiskSpec, LaunchSpec};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn spec_file() -> PathBuf {
    let p = std::env::var_os("BANGER_FIRECRACKER_YAML")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/firecracker/firecracker.yaml")
        });
    assert!(
        p.exists(),
        "firecracker.yaml not found at {}; set BANGER_FIRECRACKER_YAML",
        p.display()
    );
    p
}

struct Api {
    doc: Yaml,
}

impl Api {
    fn load() -> Api {
        let text = std::fs::read_to_string(spec_file()).unwrap();
        Api {
            doc: serde_yaml::from_str(&text).unwrap(),
        }
    }

    /// The body schema of `method path`, matching `{param}` segments.
    fn body_schema(&self, method: &str, path: &str) -> Yaml {
        let paths = self.doc["paths"].as_mapping().unwrap();
        let want: Vec<&str> = path.split('/').collect();
        for (tmpl, ops) in paths {
            let tmpl = tmpl.as_str().unwrap();
            let segs: Vec<&str> = tmpl.split('/').collect();
            let matches = segs.len() == want.len()
                && segs
                    .iter()
                    .zip(&want)
                    .all(|(t, w)| t == w || (t.starts_with('{') && t.ends_with('}')));
            if !matches {
                continue;
            }
            let op = &ops[method.to_ascii_lowercase().as_str()];
            assert!(!op.is_null(), "{method} {tmpl} is not in the API");
            let params = op["parameters"].as_sequence().expect("parameters");
            let body = params
                .iter()
                .find(|p| p["in"].as_str() == Some("body"))
                .expect("a body parameter");
            return body["schema"].clone();
        }
        panic!("no path {path} in the API");
    }

    fn resolve<'a>(&'a self, schema: &'a Yaml) -> &'a Yaml {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/definitions/").expect("local ref");
                let d = &self.doc["definitions"][name];
                assert!(!d.is_null(), "dangling $ref {r}");
                self.resolve(d)
            }
            None => schema,
        }
    }

    fn validate(&self, schema: &Yaml, v: &Json, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(schema);
        if let Some(t) = s["type"].as_str() {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                other => panic!("schema type {other} not supported by this validator"),
            };
            if !ok {
                errs.push(format!("{at}: expected {t}, got {v}"));
                return;
            }
        }
        if let Some(values) = s["enum"].as_sequence() {
            let allowed: Vec<Json> = values
                .iter()
                .map(|y| serde_json::to_value(y).unwrap())
                .collect();
            if !allowed.contains(v) {
                errs.push(format!("{at}: {v} not in {allowed:?}"));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = s["minimum"].as_f64()
                && n < min
            {
                errs.push(format!("{at}: {n} < minimum {min}"));
            }
            if let Some(max) = s["maximum"].as_f64()
                && n > max
            {
                errs.push(format!("{at}: {n} > maximum {max}"));
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, e) in arr.iter().enumerate() {
                self.validate(items, e, &format!("{at}[{i}]"), errs);
            }
        }
        if let Some(obj) = v.as_object() {
            for r in s["required"].as_sequence().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: missing required {r}"));
                }
            }
            let props = s["properties"].as_mapping();
            for (k, val) in obj {
                let sub = props.and_then(|p| p.get(Yaml::String(k.clone())));
                match (sub, s.get("additionalProperties")) {
                    (Some(sub), _) => self.validate(sub, val, &format!("{at}.{k}"), errs),
                    (None, Some(extra)) if extra.is_mapping() => {
                        self.validate(extra, val, &format!("{at}.{k}"), errs)
                    }
                    (None, _) => errs.push(format!("{at}: unknown property {k}")),
                }
            }
        }
    }

    fn check(&self, req: &ApiRequest) -> Vec<String> {
        let schema = self.body_schema(req.method, &req.path);
        let mut errs = Vec::new();
        self.validate(
            &schema,
            &req.body,
            &format!("{} {}", req.method, req.path),
            &mut errs,
        );
        errs
    }
}

fn spec(tap: bool) -> LaunchSpec {
    let disk = |role, path: &str, read_only| DiskSpec {
        role,
        path: path.into(),
        read_only,
    };
    LaunchSpec {
        name: "vm1".into(),
        kernel: "/k/vmlinux".into(),
        initramfs: Some("/k/initramfs".into()),
        params: banger_proto::boot_params::BootParams::parse(
            "banger.ip=172.16.0.2/24 banger.gw=172.16.0.1",
        )
        .0,
        vcpus: 2,
        memory_mib: 1024,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        inject_socket: None,
        disks: vec![
            disk(DiskRole::Base, "/i/base.ext4", true),
            disk(DiskRole::Overlay, "/v/overlay.ext4", false),
            disk(DiskRole::Work, "/v/work.ext4", false),
        ],
        tap: tap.then(|| "tap-vm1".into()),
        tap_fd: None,
        mac: tap.then(|| "06:00:ac:10:00:02".into()),
        console_log: "/v/console.log".into(),
        console_max: 0,
        cgroup: None,
        agent_socket: "/v/agent.sock".into(),
        api_socket: "/v/api.sock".into(),
        vsock_cid: Some(7),
        incoming: None,
        detached_nic: false,
        run_dir: "/v/run".into(),
    }
}

#[test]
fn every_launch_request_matches_the_api_description() {
    let api = Api::load();
    for tap in [false, true] {
        let reqs = banger_vmm::firecracker::launch::launch_requests(&spec(tap)).unwrap();
        let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
        for want in [
            "/machine-config",
            "/boot-source",
            "/drives/banger_base",
            "/drives/banger_overlay",
            "/drives/banger_work",
            "/vsock",
            "/balloon",
            "/actions",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        assert_eq!(paths.contains(&"/network-interfaces/eth0"), tap);
        assert_eq!(paths.last(), Some(&"/actions"), "InstanceStart comes last");
        for r in &reqs {
            let errs = api.check(r);
            assert!(errs.is_empty(), "{errs:#?}");
        }
    }
    for a in [
        ActionType::InstanceStart,
        ActionType::SendCtrlAltDel,
        ActionType::FlushMetrics,
    ] {
        assert!(api.check(&api::action(a)).is_empty());
    }
    for s in [api::VmRunState::Paused, api::VmRunState::Resumed] {
        assert!(api.check(&api::set_vm_state(s)).is_empty());
    }
    // `vm set --memory` on a running VM: the balloon takes the rest.
    let resize = banger_vmm::firecracker::balloon::resize(1024, 256).unwrap();
    assert_eq!((resize.method, resize.path.as_str()), ("PATCH", "/balloon"));
    assert_eq!(resize.body["amount_mib"], 768);
    let errs = api.check(&resize);
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn boot_args_name_disks_in_attach_order() {
    let c = banger_vmm::firecracker::launch::cmdline(&spec(false));
    assert!(
        c.contains("banger.root=/dev/vda banger.overlay=/dev/vdb banger.work=/dev/vdc"),
        "{c}"
    );
    assert!(c.ends_with("banger.gw=172.16.0.1"), "{c}");
}

/// The validator must catch what it is there to catch, or the test above
/// proves nothing.
#[test]
fn validator_rejects_bad_bodies() {
    let api = Api::load();
    let bad = |path: &str, body: Json| {
        let errs = api.check(&ApiRequest {
            method: "PUT",
            path: path.into(),
            body,
        });
        assert!(!errs.is_empty(), "{path} accepted");
        errs
    };
    let e = bad("/machine-config", serde_json::json!({"vcpu_count": 2}));
    assert!(e[0].contains("missing required mem_size_mib"), "{e:?}");
    let e = bad(
        "/machine-config",
        serde_json::json!({"vcpu_count": 64, "mem_size_mib": 1}),
    );
    assert!(e[0].contains("maximum"), "{e:?}");
    let e = bad(
        "/drives/x",
        serde_json::json!({"drive_id": "x", "is_root_device": "no"}),
    );
    assert!(e[0].contains("expected boolean"), "{e:?}");
    let e = bad("/actions", serde_json::json!({"action_type": "Reboot"}));
    assert!(e[0].contains("not in"), "{e:?}");
    let e = bad(
        "/vsock",
        serde_json::json!({"guest_cid": 3, "uds_path": "/s", "cid": 1}),
    );
    assert!(e[0].contains("unknown property cid"), "{e:?}");
    let e = bad(
        "/vsock",
        serde_json::json!({"guest_cid": 2, "uds_path": "/s"}),
    );
    assert!(e[0].contains("minimum"), "{e:?}");
    let e = bad(
        "/balloon",
        serde_json::json!({"amount_mib": 0, "free_page_reporting": true}),
    );
    assert!(e[0].contains("missing required deflate_on_oom"), "{e:?}");
}

#[test]
fn snapshot_requests_match_the_api_description() {
    let api = Api::load();
    let dir = std::path::Path::new("/d/snapshots/5e5e");
    let create = api::snapshot_create(dir).unwrap();
    assert_eq!(
        (create.method, create.path.as_str()),
        ("PUT", "/snapshot/create")
    );
    let errs = api.check(&create);
    assert!(errs.is_empty(), "{errs:#?}");
    for tap in [false, true] {
        let load = api::snapshot_load(dir, &spec(tap)).unwrap();
        assert_eq!(load.path, "/snapshot/load");
        assert_eq!(
            load.body["network_overrides"].is_array(),
            tap,
            "{}",
            load.body
        );
        let errs = api.check(&load);
        assert!(errs.is_empty(), "{errs:#?}");
    }
    // The validator sees these fields: a load without its memory backend's
    // path, a create with a snapshot type Firecracker does not have.
    let errs = api.check(&ApiRequest {
        method: "PUT",
        path: "/snapshot/load".into(),
        body: serde_json::json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "File"}}),
    });
    assert!(!errs.is_empty(), "accepted a backend without backend_path");
    let errs = api.check(&ApiRequest {
        method: "PUT",
        path: "/snapshot/create".into(),
        body: serde_json::json!({"snapshot_path": "/s", "mem_file_path": "/m", "snapshot_type": "Half"}),
    });
    assert!(!errs.is_empty(), "accepted snapshot_type Half");
}
