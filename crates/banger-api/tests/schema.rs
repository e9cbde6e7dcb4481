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
    let req: VmCreateRequest =
        serde_json::from_str(r#"{"name":"web","work_disk_size":"16G","vcpus":4}"#).unwrap();
    assert_eq!(req.work_disk_size, Some(ByteSize(16 << 30)));
    assert!(serde_json::from_str::<VmCreateRequest>(r#"{"nmae":"web"}"#).is_err());
    assert!(serde_json::from_str::<VmSetRequest>(r#"{"cpus":2}"#).is_err());
    assert!(serde_json::from_str::<ImageImportRequest>(r#"{"path":"/x"}"#).is_err());
    insta::assert_json_snapshot!("create_request", req);
}
