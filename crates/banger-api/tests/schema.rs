//! Wire snapshots: every API shape serialized from a fixed example. A change
//! to a field name, a tag or an enum spelling shows up as a snapshot diff and
//! must come with an API_VERSION decision and a docs/api.md update.

use banger_api::*;

fn vm() -> VmRecord {
    VmRecord {
        id: "3f2a9c0d1e4b5a67".into(),
        name: "web".into(),
        image_id: "aaaaaaaaaaaaaaaa".into(),
        kernel_id: "bbbbbbbbbbbbbbbb".into(),
        spec: VmSpec {
            vcpus: 2,
            memory_mib: 1024,
            overlay_disk_bytes: 8 << 30,
            work_disk_bytes: 8 << 30,
        },
        desired_state: VmState::Stopped,
        guest_ip: "172.16.0.2".into(),
        vsock_cid: 3,
        dir: "/d/vms/3f2a9c0d1e4b5a67".into(),
        overlay_disk: "/d/vms/3f2a9c0d1e4b5a67/overlay.ext4".into(),
        work_disk: "/d/vms/3f2a9c0d1e4b5a67/work.ext4".into(),
        created_at: "2026-11-22T04:00:00Z".into(),
        updated_at: "2026-11-22T04:00:00Z".into(),
        paused: false,
        ports: vec![
            "8080:80".parse().unwrap(),
            "127.0.0.1:5353:53/udp".parse().unwrap(),
        ],
        network: VmNetwork::Auto,
        egress: "10.0.0.0/8,pypi.org:443/tcp".parse().unwrap(),
        no_network: None,
        agent_fault: None,
        confinement: None,
        idle_suspend_secs: None,
        suspended: false,
    }
}

#[test]
fn records() {
    insta::assert_json_snapshot!("vm_record", vm());
    insta::assert_json_snapshot!(
        "image_record",
        ImageRecord {
            id: "aaaaaaaaaaaaaaaa".into(),
            name: "debian-bookworm".into(),
            source: ImageSource::Tarball {
                path: "/srv/rootfs.tar".into()
            },
            base_path: "/d/images/aaaaaaaaaaaaaaaa/rootfs.ext4".into(),
            work_seed_path: "/d/images/aaaaaaaaaaaaaaaa/work-seed".into(),
            size_bytes: 402653184,
            has_init: true,
            config: ImageConfig::default(),
            created_at: "2026-11-22T04:00:00Z".into(),
        }
    );
    insta::assert_json_snapshot!(
        "kernel_record",
        KernelRecord {
            id: "bbbbbbbbbbbbbbbb".into(),
            name: "6.1.0-28-cloud-amd64".into(),
            release: Some("6.1.0-28-cloud-amd64".into()),
            kernel_path: "/d/kernels/bbbbbbbbbbbbbbbb/vmlinuz".into(),
            vmlinux_path: Some("/d/kernels/bbbbbbbbbbbbbbbb/vmlinux".into()),
            config_path: Some("/d/kernels/bbbbbbbbbbbbbbbb/config".into()),
            initrd_path: None,
            modules_path: Some("/d/kernels/bbbbbbbbbbbbbbbb/modules/6.1.0-28-cloud-amd64".into()),
            modules_disk: Some("/d/kernels/bbbbbbbbbbbbbbbb/modules.ext4".into()),
            vmm_support: vec![
                VmmSupport {
                    vmm: "firecracker".into(),
                    bootable: Bootable::No,
                    reasons: vec![
                        "virtio-mmio devices need VIRTIO_MMIO_CMDLINE_DEVICES or ACPI".into()
                    ],
                },
                VmmSupport {
                    vmm: "qemu".into(),
                    bootable: Bootable::Yes,
                    reasons: vec![],
                },
            ],
            is_default: true,
            created_at: "2026-11-22T04:00:00Z".into(),
        }
    );
    insta::assert_json_snapshot!(
        "kernel_catalog_entry",
        KernelCatalogEntry {
            name: "debian-cloud-6.1".into(),
            url: "pool/main/l/linux/linux-image-6.1.0-28-cloud-amd64_6.1.119-1_amd64.deb".into(),
            sha256: "00".repeat(32),
            format: KernelFileFormat::Deb,
            origin: "builtin".into(),
        }
    );
    insta::assert_json_snapshot!(
        "registry_source",
        ImageSource::Registry {
            reference: "docker.io/library/debian:bookworm".into(),
            digest: "sha256:00".into()
        }
    );
    insta::assert_json_snapshot!(
        "prune_report",
        PruneReport {
            blobs_removed: 3,
            bytes_freed: 31457280,
        }
    );
}

#[test]
fn daemon_answers() {
    insta::assert_json_snapshot!(
        "start_report",
        StartReport {
            vm: vm(),
            vmm: "qemu".into(),
            warm: true,
            timings: StartTimings {
                prepare_ms: 1.5,
                network_ms: 0.5,
                spawn_ms: 40.0,
                boot_ms: 2500.25,
            },
        }
    );
    insta::assert_json_snapshot!(
        "template_info",
        TemplateInfo {
            key: "0f1e2d3c4b5a6978".into(),
            kernel_id: "k1".into(),
            kernel: "debian-6.1".into(),
            vmm: "qemu".into(),
            vcpus: 2,
            memory_mib: 256,
            nic: false,
            made_at: "2026-12-01T16:00:00Z".into(),
            state_bytes: 31457280,
            made_ms: 1800.5,
            state: "ready".into(),
        }
    );
    insta::assert_json_snapshot!(
        "daemon_info",
        DaemonInfo {
            api_version: API_VERSION,
            version: "0.1.0".into(),
            pid: 4242,
            socket: "/run/user/1000/banger/bangerd.sock".into(),
            data_dir: "/home/u/.local/share/banger".into(),
            started_at: "2026-11-22T04:00:00Z".into(),
        }
    );
    insta::assert_json_snapshot!("daemon_stop", DaemonStopReply { stopping: true });
    insta::assert_json_snapshot!(
        "vm_stats",
        VmStats {
            id: "3f2a9c0d1e4b5a67".into(),
            name: "web".into(),
            state: "running".into(),
            sampled_at_ms: 1_796_128_502_000,
            guest: Some(serde_json::json!({"uptime_ms": 15270})),
            guest_error: None,
            vmm: Some(VmmUsage {
                pid: 4242,
                cpu_ms: 1500,
                rss_bytes: 254_410_752,
            }),
            disk_files: vec![DiskFile {
                role: "overlay".into(),
                path: "/d/vms/3f2a9c0d1e4b5a67/overlay.ext4".into(),
                size_bytes: 8 << 30,
                allocated_bytes: 98304,
            }],
            net: Some(NetUsage {
                interface: "bgt3f2a9c0d1e4b".into(),
                rx_bytes: 1000,
                tx_bytes: 2000,
            }),
        }
    );
    insta::assert_json_snapshot!(
        "config_reply",
        ConfigReply {
            path: "/home/u/.config/banger/config.toml".into(),
            toml: "vmm = \"auto\"\n".into(),
            config: EffectiveConfig {
                data_dir: "/home/u/.local/share/banger".into(),
                vmm: "auto".into(),
                default_image: None,
                vm: VmDefaultsConfig {
                    vcpus: 2,
                    memory_mib: 1024,
                    overlay_disk_size: 8 << 30,
                    work_disk_size: 8 << 30,
                },
                network: NetworkSettings {
                    mode: "auto".into(),
                    bridge: "banger0".into(),
                    bridge_cidr: "172.16.0.1/24".into(),
                    dns_upstreams: vec!["10.0.0.53:53".into()],
                    domain: "vm".into(),
                    helper_socket: None,
                },
                binaries: BinariesConfig {
                    firecracker: "firecracker".into(),
                    qemu: "qemu-system-x86_64".into(),
                },
            },
        }
    );
    insta::assert_json_snapshot!(
        "doctor_checks",
        vec![
            DoctorCheck {
                name: "qemu".into(),
                status: CheckStatus::Pass,
                detail: "/usr/bin/qemu-system-x86_64 (QEMU 7.2.0)".into(),
                fix: String::new(),
            },
            DoctorCheck {
                name: "kvm".into(),
                status: CheckStatus::Warn,
                detail: "/dev/kvm is PVM-only".into(),
                fix: "VMs boot under TCG".into(),
            },
            DoctorCheck {
                name: "fakeroot".into(),
                status: CheckStatus::Fail,
                detail: "not found".into(),
                fix: "apt-get install fakeroot".into(),
            },
        ]
    );
}

/// Responses may come from a newer daemon: extra fields are ignored.
#[test]
fn responses_tolerate_unknown_fields() {
    let mut v = serde_json::to_value(vm()).unwrap();
    v["added_later"] = serde_json::json!({"x": 1});
    v["spec"]["balloon"] = serde_json::json!(true);
    assert_eq!(serde_json::from_value::<VmRecord>(v).unwrap(), vm());
    let info: DaemonInfo = serde_json::from_str(
        r#"{"api_version":1,"version":"9","pid":1,"socket":"s","data_dir":"d","started_at":"t","features":["x"]}"#,
    )
    .unwrap();
    assert_eq!(info.pid, 1);
    let src: ImageSource =
        serde_json::from_str(r#"{"kind":"tarball","path":"/x","sha256":"00"}"#).unwrap();
    assert_eq!(src, ImageSource::Tarball { path: "/x".into() });
    let src: ImageSource = serde_json::from_str(r#"{"kind":"built_later","x":1}"#).unwrap();
    assert_eq!(src, ImageSource::Unknown);
    let e = ApiError::from_response(
        400,
        br#"{"error":{"code":"invalid_argument","message":"m","hint":"h"},"trace":1}"#,
    );
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

#[test]
fn error_codes_are_an_open_set() {
    // Every known code round-trips and keeps its status.
    let statuses: Vec<(String, u16)> = ErrorCode::KNOWN
        .iter()
        .map(|c| {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(c)).unwrap();
            assert_eq!(serde_json::to_value(&code).unwrap(), serde_json::json!(c));
            assert!(!matches!(code, ErrorCode::Unknown(_)), "{c}");
            (c.to_string(), code.http_status())
        })
        .collect();
    insta::assert_json_snapshot!("error_code_statuses", statuses);
    assert_eq!(
        ApiError::no_space("/d/kernels").message,
        "no space left on /d/kernels"
    );
    assert_eq!(ApiError::no_space("/d").http_status(), 507);

    // A newer daemon's code: an older CLI keeps its spelling and the status
    // the response came with, and prints the message.
    let body = br#"{"error":{"code":"quota_exhausted","message":"over quota on /d"}}"#;
    let e = ApiError::from_response(429, body);
    assert_eq!(e.code, ErrorCode::Unknown("quota_exhausted".into()));
    assert_eq!(e.code.to_string(), "quota_exhausted");
    assert_eq!(e.http_status(), 429);
    assert_eq!(e.to_string(), "over quota on /d");
    insta::assert_json_snapshot!("unknown_error_code", e);
    // The same inside a stream.
    let ev: Event = serde_json::from_slice(
        br#"{"type":"error","error":{"code":"quota_exhausted","message":"m"}}"#,
    )
    .unwrap();
    assert!(
        matches!(ev, Event::Error { error } if error.code == ErrorCode::Unknown("quota_exhausted".into()))
    );
    // An event kind from a newer daemon is skipped, not an error.
    let ev: Event =
        serde_json::from_str(r#"{"type":"warning","text":"disk almost full","level":2}"#).unwrap();
    assert_eq!(ev, Event::Unknown);
    // Not an error body at all: internal, status kept.
    let e = ApiError::from_response(502, b"<html>bad gateway</html>");
    assert_eq!(
        (e.code.clone(), e.http_status()),
        (ErrorCode::Internal, 502)
    );
    assert!(e.message.contains("bad gateway"), "{}", e.message);
}

#[test]
fn events_and_errors() {
    let events = vec![
        Event::Stage {
            stage: "prepare_disks".into(),
            detail: "building".into(),
        },
        Event::Progress {
            stage: "unpack".into(),
            current: 1,
            total: Some(2),
        },
        Event::Message { text: "hi".into() },
        Event::Result {
            value: serde_json::json!({"ok": true}),
        },
        Event::Error {
            error: ApiError::not_found("no vm named \"x\""),
        },
    ];
    insta::assert_json_snapshot!("events", events);
    insta::assert_json_snapshot!(
        "error_body",
        error::ErrorBody {
            error: ApiError::new(ErrorCode::Ambiguous, "vm reference \"a\" is ambiguous")
        }
    );
}

#[test]
fn requests_reject_unknown_fields_and_accept_human_sizes() {
    let req: VmCreateRequest = serde_json::from_str(
        r#"{"name":"web","work_disk_size":"16G","vcpus":4,
            "ports":[{"host_port":8080,"guest_port":80}],"network":"auto"}"#,
    )
    .unwrap();
    assert_eq!(req.ports, ["8080:80".parse::<PortSpec>().unwrap()]);
    assert!(
        serde_json::from_str::<VmCreateRequest>(r#"{"network":"host"}"#).is_err(),
        "unknown network mode"
    );
    assert_eq!(req.work_disk_size, Some(ByteSize(16 << 30)));
    assert!(serde_json::from_str::<VmCreateRequest>(r#"{"nmae":"web"}"#).is_err());
    assert!(serde_json::from_str::<VmSetRequest>(r#"{"cpus":2}"#).is_err());
    assert!(serde_json::from_str::<ImageImportRequest>(r#"{"path":"/x"}"#).is_err());
    assert!(serde_json::from_str::<VmStopRequest>(r#"{"timeout":2}"#).is_err());
    assert!(!serde_json::from_str::<VmStartRequest>("{}").unwrap().cold);
    assert!(
        serde_json::from_str::<VmStartRequest>(r#"{"cold":true}"#)
            .unwrap()
            .cold
    );
    assert!(serde_json::from_str::<VmStartRequest>(r#"{"warm":true}"#).is_err());
    let w: WarmRequest = serde_json::from_str(r#"{"target":"k","memory_mib":256}"#).unwrap();
    assert_eq!(
        (w.target.as_deref(), w.vcpus, w.memory_mib),
        (Some("k"), None, Some(256))
    );
    assert!(serde_json::from_str::<WarmRequest>(r#"{"memory":"1G"}"#).is_err());
    assert!(serde_json::from_str::<VmRmQuery>(r#"{"forse":true}"#).is_err());
    insta::assert_json_snapshot!("create_request", req);
    insta::assert_json_snapshot!(
        "stop_request",
        VmStopRequest {
            timeout_secs: Some(5)
        }
    );
    insta::assert_json_snapshot!("rm_query", VmRmQuery { force: true });
}

#[test]
fn commit_and_rebase_shapes() {
    let commit: ImageCommitRequest =
        serde_json::from_str(r#"{"vm":"web","name":"web-snap"}"#).unwrap();
    assert!(serde_json::from_str::<ImageCommitRequest>(r#"{"vm":"web"}"#).is_err());
    assert!(
        serde_json::from_str::<ImageCommitRequest>(r#"{"vm":"w","name":"n","pause":1}"#).is_err()
    );
    insta::assert_json_snapshot!("commit_request", commit);
    let rebase: VmRebaseRequest = serde_json::from_str(r#"{"image":"debian:13"}"#).unwrap();
    assert!(serde_json::from_str::<VmRebaseRequest>(r#"{"img":"x"}"#).is_err());
    insta::assert_json_snapshot!("rebase_request", rebase);
    insta::assert_json_snapshot!(
        "commit_source",
        ImageSource::Commit {
            vm_id: "3f2a9c0d1e4b5a67".into(),
            vm_name: "web".into(),
            parent_image_id: "aaaaaaaaaaaaaaaa".into(),
            parent_image_name: "debian-bookworm".into(),
        }
    );
}

#[test]
fn exec_query_defaults_to_the_exec_as_sent() {
    // Absent means false: an older client's exec runs exactly as sent.
    let q: ExecQuery = serde_json::from_str("{}").unwrap();
    assert!(!q.image_config);
    assert!(serde_json::from_str::<ExecQuery>(r#"{"image_cfg":true}"#).is_err());
    insta::assert_json_snapshot!("exec_query", ExecQuery { image_config: true });
}

#[test]
fn imports_pulls_uploads_and_guest_access() {
    insta::assert_json_snapshot!(
        "kernel_import_request",
        KernelImportRequest {
            path: "/srv/linux-image-6.1.0-28-cloud-amd64.deb".into(),
            initrd: None,
            name: Some("cloud".into()),
            deb: true,
        }
    );
    insta::assert_json_snapshot!(
        "kernel_pull_request",
        KernelPullRequest {
            entry: "debian-bookworm-cloud".into(),
            name: None,
        }
    );
    insta::assert_json_snapshot!(
        "image_pull_request",
        ImagePullRequest {
            reference: "127.0.0.1:5000/app:1".into(),
            name: Some("app".into()),
            platform: Some("linux/amd64".into()),
            insecure: false,
            username: None,
            password: None,
        }
    );
    insta::assert_json_snapshot!(
        "image_upload_query",
        ImageUploadQuery {
            name: "app".into(),
            source: Some("laptop:/srv/rootfs".into()),
            directory: true,
        }
    );
    insta::assert_json_snapshot!(
        "kernel_upload_query",
        KernelUploadQuery {
            name: Some("cloud".into()),
            deb: true,
        }
    );
    insta::assert_json_snapshot!(
        "tcp_query",
        TcpQuery {
            port: 5432,
            host: None,
        }
    );
    insta::assert_json_snapshot!(
        "path_query",
        PathQuery {
            path: "/root/src".into(),
        }
    );
    insta::assert_json_snapshot!(
        "copy_in_report",
        CopyInReport {
            path: "/root/src".into(),
            bytes: 10240,
        }
    );
    insta::assert_json_snapshot!(
        "vm_ssh_access",
        VmSshAccess {
            user: "root".into(),
            host_key_alias: "web.vm".into(),
            known_hosts: vec!["web.vm ssh-ed25519 AAAAC3Nza...".into()],
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----...".into(),
            public_key: "ssh-ed25519 AAAAC3Nza... banger".into(),
        }
    );
}

#[test]
fn snapshots() {
    insta::assert_json_snapshot!(
        "snapshot_record",
        SnapshotRecord {
            id: "5e5e5e5e5e5e5e5e".into(),
            name: "web-1".into(),
            source_vm_id: "3f2a9c0d1e4b5a67".into(),
            source_vm_name: "web".into(),
            kernel_id: "bbbbbbbbbbbbbbbb".into(),
            image_id: "aaaaaaaaaaaaaaaa".into(),
            agent: "0123456789abcdef".into(),
            agent_version: "0.1.0".into(),
            vmm: "qemu".into(),
            spec: vm().spec,
            has_nic: false,
            dir: "/d/snapshots/5e5e5e5e5e5e5e5e".into(),
            state_bytes: 98_566_144,
            disk_bytes: 12_582_912,
            state: SnapshotState::Ready,
            created_at: "2026-11-22T04:00:00Z".into(),
        }
    );
    let snap: VmSnapshotRequest =
        serde_json::from_str(r#"{"name":"web-1","keep_paused":true}"#).unwrap();
    insta::assert_json_snapshot!("snapshot_request", snap);
    assert!(serde_json::from_str::<VmSnapshotRequest>(r#"{"nmae":"x"}"#).is_err());
    assert_eq!(
        serde_json::from_str::<VmRestoreRequest>("{}").unwrap(),
        VmRestoreRequest::default()
    );
    insta::assert_json_snapshot!(
        "restore_request",
        VmRestoreRequest {
            name: Some("web2".into())
        }
    );
    insta::assert_json_snapshot!(
        "fork_request",
        VmForkRequest {
            name: "web2".into()
        }
    );
    assert!(serde_json::from_str::<VmForkRequest>("{}").is_err());
}
