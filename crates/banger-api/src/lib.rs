//! The contract between `banger` (CLI) and `bangerd` (daemon).
//!
//! This crate owns the JSON shapes that travel over the daemon's Unix socket:
//! the records the daemon exposes (VMs, images, kernels), request bodies,
//! streamed events and the error body. It holds no logic beyond validation of
//! user-supplied values that both sides must agree on (names, sizes).
//!
//! It does not know about SQL, HTTP framing or the filesystem. The wire is
//! versioned by [`API_VERSION`]; every route lives under `/v{API_VERSION}/`.
//! Changes to these types show up as snapshot diffs in `tests/schema.rs`.
//!
//! Every route is declared once in [`endpoints`] (an [`Endpoint`] each):
//! the daemon's router, the OpenAPI document and the CLI's client are
//! built from those declarations.
//!
//! With the `openapi` feature every type also describes itself as an
//! OpenAPI schema (utoipa), from which the daemon builds
//! `GET /v1/openapi.json` and `docs/openapi.json`.

pub mod config;
pub mod doc;
pub mod egress;
pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod event;
pub mod model;
pub mod ports;
pub mod remote;
pub mod request;
#[cfg(feature = "openapi")]
mod schema;
pub mod size;
pub mod snapshot;
pub mod stats;
pub mod validate;

pub use config::*;
pub use egress::{Egress, EgressRule, EgressTarget};
pub use endpoint::{Endpoint, EndpointInfo, NoQuery};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use event::Event;
pub use model::*;
pub use ports::{PortProto, PortSpec, VmNetwork, validate_ports};
pub use remote::{ImageUploadQuery, KernelUploadQuery, VmSshAccess};
pub use request::*;
pub use size::ByteSize;
pub use snapshot::*;
pub use stats::{DiskFile, NetUsage, VmStats, VmmUsage};

/// Version of the HTTP API. Bumped on any incompatible change to a route or a
/// body; additive fields do not bump it.
pub const API_VERSION: u32 = 1;

/// Path prefix of every route, e.g. `/v1/vms`.
pub const API_PREFIX: &str = "/v1";

/// The protocol an exec session's connection switches to.
pub const EXEC_PROTOCOL: &str = "banger-exec/1";

/// The protocol a guest TCP stream's connection switches to.
pub const TCP_PROTOCOL: &str = "banger-tcp/1";

/// Content type of streamed responses: one JSON [`Event`] per line.
pub const NDJSON: &str = "application/x-ndjson";
