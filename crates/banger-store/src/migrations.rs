//! The schema, as an append-only list of migrations.
//!
//! Never edit a migration that has shipped: databases in the field are at its
//! version already. Add a new `M::up` at the end instead. SQLite records the
//! applied count in `PRAGMA user_version`.

use rusqlite_migration::{M, Migrations};

const V1_INITIAL: &str = "
CREATE TABLE kernels (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    release      TEXT,
    kernel_path  TEXT NOT NULL,
    initrd_path  TEXT,
    modules_path TEXT,
    is_default   INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at   TEXT NOT NULL
) STRICT;

-- At most one default kernel, whatever the code above us does.
CREATE UNIQUE INDEX kernels_single_default ON kernels (is_default) WHERE is_default = 1;

CREATE TABLE images (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL CHECK (json_valid(source)),
    base_path      TEXT NOT NULL,
    work_seed_path TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL CHECK (size_bytes >= 0),
    has_init       INTEGER NOT NULL CHECK (has_init IN (0, 1)),
    config         TEXT NOT NULL CHECK (json_valid(config)),
    created_at     TEXT NOT NULL
) STRICT;

CREATE TABLE vms (
    id                 TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL UNIQUE,
    image_id           TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id          TEXT NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
    vcpus              INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib         INTEGER NOT NULL CHECK (memory_mib >= 0),
    overlay_disk_bytes INTEGER NOT NULL CHECK (overlay_disk_bytes >= 0),
    work_disk_bytes    INTEGER NOT NULL CHECK (work_disk_bytes >= 0),
    desired_state      TEXT NOT NULL CHECK (desired_state IN ('stopped', 'running')),
    guest_ip           TEXT NOT NULL UNIQUE,
    vsock_cid          INTEGER NOT NULL UNIQUE CHECK (vsock_cid >= 3),
    dir                TEXT NOT NULL,
    overlay_disk       TEXT NOT NULL,
    work_disk          TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
) STRICT;

-- The foreign-key checks on image and kernel deletion look VMs up by these.
CREATE INDEX vms_image_id ON vms (image_id);
CREATE INDEX vms_kernel_id ON vms (kernel_id);
";

/// The cache blobs (config and layers, `sha256:<hex>`) each pulled image
/// was built from, so removing an image can free the blobs no other image
/// shares. Rows go with their image.
const V2_IMAGE_BLOBS: &str = "
CREATE TABLE image_blobs (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    digest   TEXT NOT NULL CHECK (digest GLOB 'sha256:*'),
    PRIMARY KEY (image_id, digest)
) STRICT, WITHOUT ROWID;

-- Whether any other image still needs a blob is a lookup by digest.
CREATE INDEX image_blobs_digest ON image_blobs (digest);
";

/// What import derives from a kernel: the ELF vmlinux, its config, the
/// read-only modules disk, and the per-VMM verdict (a JSON array of
/// `VmmSupport`; empty for kernels imported before it was judged).
const V3_KERNEL_ARTIFACTS: &str = "
ALTER TABLE kernels ADD COLUMN vmlinux_path TEXT;
ALTER TABLE kernels ADD COLUMN config_path TEXT;
ALTER TABLE kernels ADD COLUMN modules_disk TEXT;
ALTER TABLE kernels ADD COLUMN vmm_support TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(vmm_support));
";

/// What a VM asks of host networking: its published ports (a JSON array
/// of `PortSpec`) and whether it gets a NIC (`--network`). VMs of v3 publish
/// nothing and follow the daemon's `network.mode`.
const V4_VM_NETWORK: &str = "
ALTER TABLE vms ADD COLUMN ports TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(ports) AND json_type(ports) = 'array');
ALTER TABLE vms ADD COLUMN network TEXT NOT NULL DEFAULT 'auto'
    CHECK (network IN ('auto', 'bridge', 'none'));
";

/// Snapshots (schema version 5). No foreign keys to images or
/// kernels on purpose: a snapshot must not block `image rm`, and a
/// restore whose image or kernel is gone says so in one line. `state` is
/// `saving` from the moment the name is taken until the files are whole;
/// a daemon that finds `saving` rows at start removes them and their files.
const V5_SNAPSHOTS: &str = "
CREATE TABLE snapshots (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL UNIQUE,
    source_vm_id   TEXT NOT NULL,
    source_vm_name TEXT NOT NULL,
    kernel_id      TEXT NOT NULL,
    image_id       TEXT NOT NULL,
    agent          TEXT NOT NULL,
    agent_version  TEXT NOT NULL,
    vmm            TEXT NOT NULL,
    vcpus              INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib         INTEGER NOT NULL CHECK (memory_mib >= 0),
    overlay_disk_bytes INTEGER NOT NULL CHECK (overlay_disk_bytes >= 0),
    work_disk_bytes    INTEGER NOT NULL CHECK (work_disk_bytes >= 0),
    has_nic        INTEGER NOT NULL CHECK (has_nic IN (0, 1)),
    dir            TEXT NOT NULL,
    state_bytes    INTEGER NOT NULL CHECK (state_bytes >= 0),
    disk_bytes     INTEGER NOT NULL CHECK (disk_bytes >= 0),
    state          TEXT NOT NULL CHECK (state IN ('saving', 'ready')),
    created_at     TEXT NOT NULL
) STRICT;

CREATE INDEX snapshots_source_vm_id ON snapshots (source_vm_id);
";

/// Where each VM may send traffic (`--egress`), as `banger_api::Egress`
/// prints it: `all` (what every VM of v5 had), `none` or an allow list.
const V6_VM_EGRESS: &str = "
ALTER TABLE vms ADD COLUMN egress TEXT NOT NULL DEFAULT 'all' CHECK (egress <> '');
";

/// Suspend when idle (schema version 7): seconds without use after which
/// a running VM is suspended; NULL follows the daemon's `vm.idle_suspend`,
/// 0 is never.
const V7_IDLE_SUSPEND: &str = "
ALTER TABLE vms ADD COLUMN idle_suspend_secs INTEGER
    CHECK (idle_suspend_secs IS NULL OR idle_suspend_secs >= 0);
";

/// Every schema version, oldest first.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1_INITIAL).foreign_key_check(),
        M::up(V2_IMAGE_BLOBS).foreign_key_check(),
        M::up(V3_KERNEL_ARTIFACTS),
        M::up(V4_VM_NETWORK),
        M::up(V5_SNAPSHOTS),
        M::up(V6_VM_EGRESS),
        M::up(V7_IDLE_SUSPEND),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_validate() {
        migrations()
            .validate()
            .expect("migrations must apply to an empty database");
    }

    #[test]
    fn kernels_of_v2_get_an_empty_verdict() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        Migrations::new(vec![M::up(V1_INITIAL), M::up(V2_IMAGE_BLOBS)])
            .to_latest(&mut conn)
            .unwrap();
        conn.execute(
            "INSERT INTO kernels (id, name, kernel_path, created_at)
             VALUES ('k1', 'old', '/k/vmlinuz', '2025-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let (support, vmlinux): (String, Option<String>) = conn
            .query_row(
                "SELECT vmm_support, vmlinux_path FROM kernels WHERE id = 'k1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((support.as_str(), vmlinux), ("[]", None));
    }

    #[test]
    fn vms_of_v3_publish_nothing_and_follow_the_daemon() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        Migrations::new(vec![
            M::up(V1_INITIAL),
            M::up(V2_IMAGE_BLOBS),
            M::up(V3_KERNEL_ARTIFACTS),
        ])
        .to_latest(&mut conn)
        .unwrap();
        conn.execute_batch(
            "INSERT INTO kernels (id, name, kernel_path, created_at)
                 VALUES ('k1', 'k', '/k', 't');
             INSERT INTO images (id, name, source, base_path, work_seed_path, size_bytes,
                                 has_init, config, created_at)
                 VALUES ('i1', 'i', '{}', '/b', '/w', 0, 0, '{}', 't');
             INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_mib,
                              overlay_disk_bytes, work_disk_bytes, desired_state, guest_ip,
                              vsock_cid, dir, overlay_disk, work_disk, created_at, updated_at)
                 VALUES ('v1', 'web', 'i1', 'k1', 1, 256, 1, 1, 'stopped', '172.16.0.2',
                         3, '/d', '/o', '/w', 't', 't');",
        )
        .unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let (ports, network): (String, String) = conn
            .query_row("SELECT ports, network FROM vms WHERE id = 'v1'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((ports.as_str(), network.as_str()), ("[]", "auto"));
        let bad = conn.execute("UPDATE vms SET network = 'host'", []);
        assert!(bad.is_err(), "unknown network mode accepted");
        let bad = conn.execute("UPDATE vms SET ports = '{}'", []);
        assert!(bad.is_err(), "ports must be an array");
    }
}
