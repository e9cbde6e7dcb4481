//! Every route of the daemon, declared once ([`ALL`]). A unit struct per
//! route implements [`Endpoint`]: the daemon routes it to one handler, the
//! OpenAPI document describes it, and the CLI calls it by type
//! (`client.call::<VmsStart>(..)`), so none of them spells a path.
//!
//! A new route is one declaration here, one entry in [`ALL`] and one
//! handler in bangerd; the drift tests fail until all three exist.

use crate::endpoint::{
    Endpoint, EndpointInfo, IMAGE_REF, Input, KERNEL_REF, Method, NoQuery, Output, Param,
    SNAPSHOT_REF, Tag, VM_REF,
};
use crate::*;

/// The request type an input names.
macro_rules! request_type {
    (none) => {
        ()
    };
    (tar) => {
        ()
    };
    (json($t:ty)) => {
        $t
    };
    (json_or_empty($t:ty)) => {
        $t
    };
}

/// The [`Input`] an input names.
macro_rules! input_kind {
    (none) => {
        Input::None
    };
    (tar) => {
        Input::Tar
    };
    (json($t:ty)) => {
        Input::Json {
            empty_is_default: false,
        }
    };
    (json_or_empty($t:ty)) => {
        Input::Json {
            empty_is_default: true,
        }
    };
}

/// The response type an output names.
macro_rules! response_type {
    (json($t:ty)) => {
        $t
    };
    (events($t:ty)) => {
        $t
    };
    (text) => {
        ()
    };
    (tar) => {
        ()
    };
    (upgrade($p:expr)) => {
        ()
    };
}

/// The [`Output`] an output names.
macro_rules! output_kind {
    (json($t:ty)) => {
        Output::Json
    };
    (events($t:ty)) => {
        Output::Events
    };
    (text) => {
        Output::Text
    };
    (tar) => {
        Output::Tar
    };
    (upgrade($p:expr)) => {
        Output::Upgrade($p)
    };
}

macro_rules! endpoint {
    (
        $(#[$meta:meta])*
        $name:ident = $id:literal: $method:ident $path:literal, $tag:ident,
        summary $summary:literal,
        description $description:literal,
        params [$($param:expr),*],
        query $query:ty,
        input $input:ident $(($req:ty))?,
        output $output:ident $(($($resp:tt)*))?,
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl Endpoint for $name {
            const ID: &'static str = $id;
            const TYPE_NAME: &'static str = stringify!($name);
            const METHOD: Method = Method::$method;
            const PATH: &'static str = $path;
            const TAG: Tag = Tag::$tag;
            const SUMMARY: &'static str = $summary;
            const DESCRIPTION: &'static str = $description;
            const PARAMS: &'static [Param] = &[$($param),*];
            const INPUT: Input = input_kind!($input $(($req))?);
            const OUTPUT: Output = output_kind!($output $(($($resp)*))?);
            type Query = $query;
            type Request = request_type!($input $(($req))?);
            type Response = response_type!($output $(($($resp)*))?);
        }
    };
}

// ---- the daemon ----------------------------------------------------------

endpoint! {
    /// `GET /v1/version`.
    Version = "version": Get "/v1/version", Daemon,
    summary "The daemon: API version, pid, socket, data dir",
    description "",
    params [], query NoQuery, input none, output json(DaemonInfo),
}
endpoint! {
    /// `POST /v1/daemon/stop`.
    DaemonStop = "stop": Post "/v1/daemon/stop", Daemon,
    summary "Stop the daemon once operations in flight finish",
    description "",
    params [], query NoQuery, input none, output json(DaemonStopReply),
}
endpoint! {
    /// `GET /v1/config`.
    Config = "config": Get "/v1/config", Daemon,
    summary "The effective configuration",
    description "",
    params [], query NoQuery, input none, output json(ConfigReply),
}
endpoint! {
    /// `GET /v1/openapi.json`.
    OpenApi = "openapi": Get "/v1/openapi.json", Daemon,
    summary "This document",
    description "The OpenAPI 3.1 description of this API.",
    params [], query NoQuery, input none, output json(serde_json::Value),
}

// ---- kernels -------------------------------------------------------------

endpoint! {
    /// `GET /v1/kernels`.
    KernelsList = "kernels_list": Get "/v1/kernels", Kernels,
    summary "List kernels",
    description "",
    params [], query NoQuery, input none, output json(Vec<KernelRecord>),
}
endpoint! {
    /// `POST /v1/kernels`.
    KernelsImport = "kernels_import": Post "/v1/kernels", Kernels,
    summary "Import a kernel file or a linux-image .deb",
    description "",
    params [], query NoQuery, input json(KernelImportRequest), output events(KernelRecord),
}
endpoint! {
    /// `GET /v1/kernels/catalog`.
    KernelsCatalog = "kernels_catalog": Get "/v1/kernels/catalog", Kernels,
    summary "The kernels `kernel pull` can fetch (shipped entries and config's)",
    description "",
    params [], query NoQuery, input none, output json(Vec<KernelCatalogEntry>),
}
endpoint! {
    /// `POST /v1/kernels/pull`.
    KernelsPull = "kernels_pull": Post "/v1/kernels/pull", Kernels,
    summary "Download a catalog kernel, verify its SHA-256 and import it",
    description "",
    params [], query NoQuery, input json(KernelPullRequest), output events(KernelRecord),
}
endpoint! {
    /// `GET /v1/kernels/{reference}`.
    KernelsShow = "kernels_show": Get "/v1/kernels/{reference}", Kernels,
    summary "Show a kernel",
    description "",
    params [KERNEL_REF], query NoQuery, input none, output json(KernelRecord),
}
endpoint! {
    /// `DELETE /v1/kernels/{reference}`.
    KernelsRm = "kernels_rm": Delete "/v1/kernels/{reference}", Kernels,
    summary "Remove a kernel (refused while a VM uses it)",
    description "",
    params [KERNEL_REF], query NoQuery, input none, output json(KernelRecord),
}
endpoint! {
    /// `POST /v1/kernels/{reference}/default`.
    KernelsDefault = "kernels_default": Post "/v1/kernels/{reference}/default", Kernels,
    summary "Make a kernel the default",
    description "",
    params [KERNEL_REF], query NoQuery, input none, output json(KernelRecord),
}

// ---- images --------------------------------------------------------------

endpoint! {
    /// `GET /v1/images`.
    ImagesList = "images_list": Get "/v1/images", Images,
    summary "List images",
    description "",
    params [], query NoQuery, input none, output json(Vec<ImageRecord>),
}
endpoint! {
    /// `POST /v1/images`.
    ImagesImport = "images_import": Post "/v1/images", Images,
    summary "Import a root directory or tarball",
    description "",
    params [], query NoQuery, input json(ImageImportRequest), output events(ImageRecord),
}
endpoint! {
    /// `POST /v1/images/pull`.
    ImagesPull = "images_pull": Post "/v1/images/pull", Images,
    summary "Pull an image from an OCI or Docker v2 registry",
    description "",
    params [], query NoQuery, input json(ImagePullRequest), output events(ImageRecord),
}
endpoint! {
    /// `POST /v1/images/prune`.
    ImagesPrune = "images_prune": Post "/v1/images/prune", Images,
    summary "Free every cache blob no image uses",
    description "",
    params [], query NoQuery, input none, output json(PruneReport),
}
endpoint! {
    /// `POST /v1/images/commit`.
    ImagesCommit = "images_commit": Post "/v1/images/commit", Images,
    summary "Make an image from a running VM's files",
    description "The VM's root filesystem (its image with its overlay) and its work disk (`/root`, the new image's work seed), read through the guest agent while the VM runs (it is not paused). Runtime directories and the files banger writes per VM are left out; the image's run configuration is the parent's. A stopped or paused VM is refused (409).",
    params [], query NoQuery, input json(ImageCommitRequest), output events(ImageRecord),
}
endpoint! {
    /// `GET /v1/images/{reference}`.
    ImagesShow = "images_show": Get "/v1/images/{reference}", Images,
    summary "Show an image",
    description "",
    params [IMAGE_REF], query NoQuery, input none, output json(ImageRecord),
}
endpoint! {
    /// `DELETE /v1/images/{reference}`.
    ImagesRm = "images_rm": Delete "/v1/images/{reference}", Images,
    summary "Remove an image (refused while a VM uses it)",
    description "",
    params [IMAGE_REF], query NoQuery, input none, output json(ImageRecord),
}

// ---- VMs -----------------------------------------------------------------

endpoint! {
    /// `GET /v1/vms`.
    VmsList = "vms_list": Get "/v1/vms", Vms,
    summary "List VMs",
    description "",
    params [], query NoQuery, input none, output json(Vec<VmRecord>),
}
endpoint! {
    /// `POST /v1/vms`.
    VmsCreate = "vms_create": Post "/v1/vms", Vms,
    summary "Create a VM: name, address, CID and disks",
    description "",
    params [], query NoQuery, input json_or_empty(VmCreateRequest), output events(VmRecord),
}
endpoint! {
    /// `GET /v1/vms/{reference}`.
    VmsShow = "vms_show": Get "/v1/vms/{reference}", Vms,
    summary "Show a VM",
    description "",
    params [VM_REF], query NoQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `PATCH /v1/vms/{reference}`.
    VmsSet = "vms_set": Patch "/v1/vms/{reference}", Vms,
    summary "Change a VM's spec",
    description "",
    params [VM_REF], query NoQuery, input json(VmSetRequest), output json(VmRecord),
}
endpoint! {
    /// `DELETE /v1/vms/{reference}`.
    VmsRm = "vms_rm": Delete "/v1/vms/{reference}", Vms,
    summary "Remove a VM and its disks",
    description "",
    params [VM_REF], query VmRmQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/start`.
    VmsStart = "vms_start": Post "/v1/vms/{reference}/start", Vms,
    summary "Boot a VM; answers once its agent does",
    description "Restores a boot template of the VM's machine shape when there is one (a warm start, `warm: true` in the answer), unless `cold`.",
    params [VM_REF], query NoQuery, input json_or_empty(VmStartRequest), output events(StartReport),
}
endpoint! {
    /// `POST /v1/vms/{reference}/stop`.
    VmsStop = "vms_stop": Post "/v1/vms/{reference}/stop", Vms,
    summary "Shut a VM down cleanly, killing it after a timeout",
    description "",
    params [VM_REF], query NoQuery, input json_or_empty(VmStopRequest), output events(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/restart`.
    VmsRestart = "vms_restart": Post "/v1/vms/{reference}/restart", Vms,
    summary "Stop, then start a VM",
    description "",
    params [VM_REF], query NoQuery, input json_or_empty(VmStopRequest), output events(StartReport),
}
endpoint! {
    /// `POST /v1/vms/{reference}/kill`.
    VmsKill = "vms_kill": Post "/v1/vms/{reference}/kill", Vms,
    summary "Kill the VMM at once",
    description "",
    params [VM_REF], query NoQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/pause`.
    VmsPause = "vms_pause": Post "/v1/vms/{reference}/pause", Vms,
    summary "Stop the VM's vCPUs",
    description "The VMM keeps running with the guest frozen; `paused` is true in the answer and in `vm show` until resumed. Execs are refused (409) while paused.",
    params [VM_REF], query NoQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/resume`.
    VmsResume = "vms_resume": Post "/v1/vms/{reference}/resume", Vms,
    summary "Run a paused VM's vCPUs again",
    description "",
    params [VM_REF], query NoQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/suspend`.
    VmsSuspend = "vms_suspend": Post "/v1/vms/{reference}/suspend", Vms,
    summary "Suspend a running VM now",
    description "The guest is saved to the VM's directory and its VMM ends (no host memory or CPU); `suspended` is true in the answer and `vm ls` shows it. Any use wakes it: a command that needs the guest, traffic to its address, a DNS query for its name. What `--idle-suspend` does after an idle period. Refused (409) while the VM is stopped or paused.",
    params [VM_REF], query NoQuery, input none, output json(VmRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/rebase`.
    VmsRebase = "vms_rebase": Post "/v1/vms/{reference}/rebase", Vms,
    summary "Move a stopped VM onto another image",
    description "Keeps the VM's work disk, name, address, MAC, CID, spec and SSH host key; its overlay disk is built anew over the image's base, so changes outside `/root` are dropped. Refused (409) while the VM runs or when the image or the VM's kernel cannot boot it.",
    params [VM_REF], query NoQuery, input json(VmRebaseRequest), output events(VmRecord),
}
endpoint! {
    /// `GET /v1/vms/{reference}/logs`.
    VmsLogs = "vms_logs": Get "/v1/vms/{reference}/logs", Vms,
    summary "The serial console",
    description "",
    params [VM_REF], query NoQuery, input none, output text,
}
endpoint! {
    /// `POST /v1/vms/{reference}/exec`.
    VmsExec = "vms_exec": Post "/v1/vms/{reference}/exec", Vms,
    summary "Run a command in a running VM (an upgraded connection)",
    description "Needs `Connection: Upgrade` and `Upgrade: banger-exec/1`; after `101` the connection carries banger-proto frames (see the module docs of bangerd's exec.rs).",
    params [VM_REF], query ExecQuery, input none, output upgrade(EXEC_PROTOCOL),
}
endpoint! {
    /// `POST /v1/vms/{reference}/tcp`.
    VmsTcp = "vms_tcp": Post "/v1/vms/{reference}/tcp", Vms,
    summary "A TCP connection to a port in the guest (an upgraded connection)",
    description "Needs `Connection: Upgrade` and `Upgrade: banger-tcp/1`. The guest connection is made before the answer, so a refusal is an ordinary error; after `101` the HTTP connection carries the TCP stream's bytes both ways, half-close included.",
    params [VM_REF], query TcpQuery, input none, output upgrade(TCP_PROTOCOL),
}
endpoint! {
    /// `PUT /v1/vms/{reference}/files`.
    VmsCopyIn = "vms_copy_in": Put "/v1/vms/{reference}/files", Vms,
    summary "Copy files into the guest (a tar body)",
    description "The body is a tar stream (`application/x-tar`), unpacked under `path` in the guest as it arrives; the answer comes once all of it is there.",
    params [VM_REF], query PathQuery, input tar, output json(CopyInReport),
}
endpoint! {
    /// `GET /v1/vms/{reference}/files`.
    VmsCopyOut = "vms_copy_out": Get "/v1/vms/{reference}/files", Vms,
    summary "Copy files out of the guest (a tar stream)",
    description "A tar of `path` (a file or a directory tree), streamed as the guest reads it. Errors found before the first byte (no such file) are ordinary error answers; a failure later cuts the body short (no terminating chunk).",
    params [VM_REF], query PathQuery, input none, output tar,
}
endpoint! {
    /// `GET /v1/vms/{reference}/ports`.
    VmsPorts = "vms_ports": Get "/v1/vms/{reference}/ports", Vms,
    summary "The guest's listening sockets (asked of its agent)",
    description "Every listening TCP and UDP socket, with its process when known.",
    params [VM_REF], query NoQuery, input none, output json(Vec<banger_proto::ListeningPort>),
}
endpoint! {
    /// `GET /v1/vms/{reference}/stats`.
    VmsStats = "vms_stats": Get "/v1/vms/{reference}/stats", Vms,
    summary "A VM's resource usage, from its agent and from the host",
    description "The guest's own report (uptime, memory, CPU time, disk usage; null with guest_error when its agent does not answer) beside the host's view: the VMM process's CPU time and RSS, the disk files, the tap's counters.",
    params [VM_REF], query NoQuery, input none, output json(VmStats<banger_proto::GuestStats>),
}

// ---- snapshots and templates ---------------------------------------------

endpoint! {
    /// `POST /v1/vms/{reference}/snapshot`.
    VmsSnapshot = "vms_snapshot": Post "/v1/vms/{reference}/snapshot", Snapshots,
    summary "Save a running VM's memory, devices and disks as a snapshot",
    description "The VM is paused while its state is written and its disks copied, then runs again (unless `keep_paused`). A stopped VM is refused (409): a snapshot holds a running guest.",
    params [VM_REF], query NoQuery, input json_or_empty(VmSnapshotRequest), output events(SnapshotRecord),
}
endpoint! {
    /// `POST /v1/vms/{reference}/fork`.
    VmsFork = "vms_fork": Post "/v1/vms/{reference}/fork", Snapshots,
    summary "Fork a running VM into a new one (new name, IP, MAC, CID, host key)",
    description "The source pauses while it is saved and runs on; the new VM continues from that instant with its own identity and copies of the disks.",
    params [VM_REF], query NoQuery, input json(VmForkRequest), output events(StartReport),
}
endpoint! {
    /// `GET /v1/snapshots`.
    SnapshotsList = "snapshots_list": Get "/v1/snapshots", Snapshots,
    summary "List snapshots",
    description "",
    params [], query NoQuery, input none, output json(Vec<SnapshotRecord>),
}
endpoint! {
    /// `GET /v1/snapshots/{reference}`.
    SnapshotsShow = "snapshots_show": Get "/v1/snapshots/{reference}", Snapshots,
    summary "Show a snapshot",
    description "",
    params [SNAPSHOT_REF], query NoQuery, input none, output json(SnapshotRecord),
}
endpoint! {
    /// `DELETE /v1/snapshots/{reference}`.
    SnapshotsRm = "snapshots_rm": Delete "/v1/snapshots/{reference}", Snapshots,
    summary "Remove a snapshot and its files",
    description "Refused (409) while a restore reads it.",
    params [SNAPSHOT_REF], query NoQuery, input none, output json(SnapshotRecord),
}
endpoint! {
    /// `POST /v1/snapshots/{reference}/restore`.
    SnapshotsRestore = "snapshots_restore": Post "/v1/snapshots/{reference}/restore", Snapshots,
    summary "Run a VM from a snapshot",
    description "Without `name`: the snapshot's source VM, which must be stopped, gets the saved disks and state back. With `name`: a new VM (new IP, MAC, CID and host key). Refused when the snapshot's kernel, image or guest agent is gone or changed.",
    params [SNAPSHOT_REF], query NoQuery, input json_or_empty(VmRestoreRequest), output events(StartReport),
}
endpoint! {
    /// `GET /v1/templates`.
    TemplatesList = "templates_list": Get "/v1/templates", Snapshots,
    summary "List boot templates",
    description "",
    params [], query NoQuery, input none, output json(Vec<TemplateInfo>),
}
endpoint! {
    /// `POST /v1/templates`.
    TemplatesMake = "templates_make": Post "/v1/templates", Snapshots,
    summary "Make the boot template warm starts of a machine shape restore (`banger warm`)",
    description "Boots a guest of the kernel to its agent's wait in the initramfs and saves it; answers the existing template when there is one. Refused (400) when the VMM or kernel cannot have templates (Firecracker; a kernel with its disk driver built in).",
    params [], query NoQuery, input json_or_empty(WarmRequest), output json(TemplateInfo),
}

// ---- for clients on another host (banger --host ssh://...) ---------------

endpoint! {
    /// `POST /v1/images/upload`.
    ImagesUpload = "images_upload": Post "/v1/images/upload", Images,
    summary "Import a root filesystem sent as the body (a tar, or a .tar.gz/.tar.zst)",
    description "What `image import` sends when the daemon is on another host: the body is stored in the daemon's scratch space, then imported as a tarball. A body that breaks off leaves nothing.",
    params [], query ImageUploadQuery, input tar, output events(ImageRecord),
}
endpoint! {
    /// `POST /v1/kernels/upload`.
    KernelsUpload = "kernels_upload": Post "/v1/kernels/upload", Kernels,
    summary "Import a kernel sent as the body: a tar of `kernel` and optionally `initrd`",
    description "What `kernel import` sends when the daemon is on another host. With `deb`, `kernel` is a `linux-image-*` package. Other entries, links and devices are refused.",
    params [], query KernelUploadQuery, input tar, output events(KernelRecord),
}
endpoint! {
    /// `GET /v1/vms/{reference}/ssh`.
    VmsSsh = "vms_ssh": Get "/v1/vms/{reference}/ssh", Vms,
    summary "What OpenSSH needs to log in to a VM from another host",
    description "The managed user key and the VM's pinned known_hosts lines, so `vm ssh` on a client host checks the VM's host key strictly, as it does here.",
    params [VM_REF], query NoQuery, input none, output json(VmSshAccess),
}

/// Every route, in document order.
pub const ALL: &[EndpointInfo] = &[
    EndpointInfo::of::<Version>(),
    EndpointInfo::of::<DaemonStop>(),
    EndpointInfo::of::<Config>(),
    EndpointInfo::of::<OpenApi>(),
    EndpointInfo::of::<KernelsList>(),
    EndpointInfo::of::<KernelsImport>(),
    EndpointInfo::of::<KernelsCatalog>(),
    EndpointInfo::of::<KernelsPull>(),
    EndpointInfo::of::<KernelsShow>(),
    EndpointInfo::of::<KernelsRm>(),
    EndpointInfo::of::<KernelsDefault>(),
    EndpointInfo::of::<ImagesList>(),
    EndpointInfo::of::<ImagesImport>(),
    EndpointInfo::of::<ImagesPull>(),
    EndpointInfo::of::<ImagesPrune>(),
    EndpointInfo::of::<ImagesCommit>(),
    EndpointInfo::of::<ImagesShow>(),
    EndpointInfo::of::<ImagesRm>(),
    EndpointInfo::of::<VmsList>(),
    EndpointInfo::of::<VmsCreate>(),
    EndpointInfo::of::<VmsShow>(),
    EndpointInfo::of::<VmsSet>(),
    EndpointInfo::of::<VmsRm>(),
    EndpointInfo::of::<VmsStart>(),
    EndpointInfo::of::<VmsStop>(),
    EndpointInfo::of::<VmsRestart>(),
    EndpointInfo::of::<VmsKill>(),
    EndpointInfo::of::<VmsPause>(),
    EndpointInfo::of::<VmsResume>(),
    EndpointInfo::of::<VmsSuspend>(),
    EndpointInfo::of::<VmsRebase>(),
    EndpointInfo::of::<VmsLogs>(),
    EndpointInfo::of::<VmsExec>(),
    EndpointInfo::of::<VmsTcp>(),
    EndpointInfo::of::<VmsCopyIn>(),
    EndpointInfo::of::<VmsCopyOut>(),
    EndpointInfo::of::<VmsPorts>(),
    EndpointInfo::of::<VmsStats>(),
    EndpointInfo::of::<VmsSnapshot>(),
    EndpointInfo::of::<VmsFork>(),
    EndpointInfo::of::<SnapshotsList>(),
    EndpointInfo::of::<SnapshotsShow>(),
    EndpointInfo::of::<SnapshotsRm>(),
    EndpointInfo::of::<SnapshotsRestore>(),
    EndpointInfo::of::<TemplatesList>(),
    EndpointInfo::of::<TemplatesMake>(),
    EndpointInfo::of::<ImagesUpload>(),
    EndpointInfo::of::<KernelsUpload>(),
    EndpointInfo::of::<VmsSsh>(),
];
