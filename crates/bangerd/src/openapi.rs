//! The OpenAPI 3.1 description of the socket API, generated from the route
//! annotations in `api.rs`, `exec.rs`, `stream.rs` and `guest.rs` and the
//! banger-api types (and banger-proto's guest answers) (utoipa):
//! served at `GET /v1/openapi.json` and checked in as `docs/openapi.json`.
//!
//! The checked-in copy is compared with the generated one by a test; after
//! changing a route or a wire type, regenerate it with
//! `BANGER_UPDATE_OPENAPI=1 cargo test -p bangerd openapi`.

use std::collections::BTreeMap;

use banger_api::{
    BinariesConfig, EffectiveConfig, ErrorBody, ErrorCode, NetworkSettings, VmDefaultsConfig,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bangerd",
        description = "The banger daemon's API, HTTP/1.1 JSON on the Unix socket \
            `$XDG_RUNTIME_DIR/banger/.../bangerd.sock`. Every failure answers an `ErrorBody` \
            whose `code` fixes the status. Long operations stream NDJSON `Event`s when asked \
            with `Accept: application/x-ndjson`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::api::version,
        crate::api::stop,
        crate::api::config,
        crate::api::openapi,
        crate::api::kernels_list,
        crate::api::kernels_import,
        crate::api::kernels_catalog,
        crate::api::kernels_pull,
        crate::api::kernels_show,
        crate::api::kernels_rm,
        crate::api::kernels_default,
        crate::api::images_list,
        crate::api::images_import,
        crate::api::images_pull,
        crate::api::images_prune,
        crate::lineage::images_commit,
        crate::api::images_show,
        crate::api::images_rm,
        crate::api::vms_list,
        crate::api::vms_create,
        crate::api::vms_show,
        crate::api::vms_set,
        crate::api::vms_rm,
        crate::api::vms_start,
        crate::api::vms_stop,
        crate::api::vms_restart,
        crate::api::vms_kill,
        crate::api::vms_pause,
        crate::api::vms_resume,
        crate::lineage::vms_rebase,
        crate::api::vms_logs,
        crate::exec::vms_exec,
        crate::stream::vms_tcp,
        crate::stream::vms_copy_in,
        crate::stream::vms_copy_out,
        crate::guest::vms_ports,
        crate::guest::vms_stats,
        crate::snapshots::vms_snapshot,
        crate::snapshots::vms_fork,
        crate::snapshots::snapshots_list,
        crate::snapshots::snapshots_show,
        crate::snapshots::snapshots_rm,
        crate::snapshots::snapshots_restore,
        crate::snapshots::templates_list,
        crate::snapshots::templates_make,
    ),
    components(schemas(ErrorBody, ErrorCode, banger_proto::GuestStats)),
    tags(
        (name = "daemon", description = "The daemon itself"),
        (name = "kernels", description = "Imported kernels"),
        (name = "images", description = "Root filesystem images"),
        (name = "vms", description = "VMs and their lifecycle"),
        (name = "snapshots", description = "Saved VM states: snapshot, restore, fork, boot templates"),
    )
)]
pub struct ApiDoc;

/// The document, with the version of this build.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = format!("{}", banger_api::API_VERSION);
    doc
}

/// The error statuses every route may answer, each with an [`ErrorBody`]:
/// what [`ErrorCode::http_status`] can give.
pub struct ApiErrors;

impl IntoResponses for ApiErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let body = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build()
        };
        [
            (
                "400",
                "invalid_argument: a malformed request or a value out of range",
            ),
            ("404", "not_found: no such object, or no such route"),
            ("409", "ambiguous, already_exists or conflict"),
            ("500", "internal: a tool failed, a bug"),
            ("507", "no_space: the data directory's filesystem is full"),
        ]
        .into_iter()
        .map(|(status, what)| {
            let r = ResponseBuilder::new()
                .description(what)
                .content("application/json", body())
                .build();
            (status.to_string(), RefOr::T(r))
        })
        .collect()
    }
}

/// The wire view of the daemon's configuration.
pub fn effective_config(c: &banger_core::Config) -> EffectiveConfig {
    EffectiveConfig {
        data_dir: c.data_dir.display().to_string(),
        vmm: serde_json::to_value(c.vmm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        default_image: c.default_image.clone(),
        vm: VmDefaultsConfig {
            vcpus: c.vm.vcpus,
            memory_mib: c.vm.memory_mib,
            overlay_disk_size: c.vm.overlay_disk_size.0,
            work_disk_size: c.vm.work_disk_size.0,
        },
        network: NetworkSettings {
            mode: serde_json::to_value(c.network.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            bridge: c.network.bridge.clone(),
            bridge_cidr: c.network.bridge_cidr.to_string(),
            dns_upstreams: c
                .network
                .dns_upstreams
                .iter()
                .map(|d| d.to_string())
                .collect(),
            domain: c.network.domain.clone(),
            helper_socket: c
                .network
                .helper_socket
                .as_ref()
                .map(|p| p.display().to_string()),
        },
        binaries: BinariesConfig {
            firecracker: c.binaries.firecracker.clone(),
            qemu: c.binaries.qemu.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked_in() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
    }

    /// docs/openapi.json is what this build serves; regenerate it with
    /// `BANGER_UPDATE_OPENAPI=1 cargo test -p bangerd openapi`.
    #[test]
    fn openapi_document_matches_docs() {
        let mut generated = document().to_pretty_json().expect("encode the document");
        generated.push('\n');
        let path = checked_in();
        if std::env::var_os("BANGER_UPDATE_OPENAPI").is_some_and(|v| !v.is_empty()) {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/openapi.json is out of date with the routes and types; regenerate it with \
             `BANGER_UPDATE_OPENAPI=1 cargo test -p bangerd openapi` and commit it"
        );
    }

    #[test]
    fn openapi_is_3_1_and_names_every_route() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/version",
            "/v1/openapi.json",
            "/v1/vms/{reference}/exec",
            "/v1/images/pull",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        // Every operation documents the error body.
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                let r = &op["responses"];
                assert!(
                    r["400"].is_object() && r["500"].is_object(),
                    "{method} {path}"
                );
            }
        }
    }

    /// Every `(method, path)` the daemon's router serves, read from the
    /// source of `api.rs`'s `router()` and of the route groups it merges
    /// (`snapshots.rs`'s `routes()`): the router cannot list its routes,
    /// and this keeps a route added without a `#[utoipa::path]` from going
    /// unnoticed.
    fn routed() -> Vec<(String, String)> {
        let api = include_str!("api.rs");
        let start = api.find("pub fn router(").expect("api.rs has router()");
        let body = &api[start..];
        let body = &body[..body
            .find(".fallback(")
            .expect("router() ends in a fallback")];
        assert!(
            body.contains("crate::snapshots::routes()"),
            "router() merges the snapshot routes; scan what it merges now"
        );
        let snaps = include_str!("snapshots.rs");
        let start = snaps
            .find("pub(crate) fn routes(")
            .expect("snapshots.rs has routes()");
        let snaps = &snaps[start..];
        let snaps = &snaps[..snaps.find("\n}\n").expect("end of routes()")];
        let mut out = Vec::new();
        for call in body
            .split(".route(")
            .chain(snaps.split(".route(").skip(1))
            .skip(1)
        {
            let path = call.split('"').nth(1).expect("a route path literal");
            let bytes = call.as_bytes();
            for method in ["get", "post", "put", "patch", "delete"] {
                let pat = format!("{method}(");
                let found = call.match_indices(&pat).any(|(i, _)| {
                    i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')
                });
                if found {
                    out.push((method.to_string(), path.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_routed_operation_is_documented() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let routes = routed();
        assert!(routes.len() > 30, "the route scan found only {routes:?}");
        let missing: Vec<String> = routes
            .iter()
            .filter(|(method, path)| !doc["paths"][path.as_str()][method.as_str()].is_object())
            .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a #[utoipa::path] in openapi.rs: {missing:?}"
        );
        // And nothing documented that is not routed.
        let paths = doc["paths"].as_object().unwrap();
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                assert!(
                    routes.iter().any(|(m, p)| m == method && p == path),
                    "documented but not routed: {method} {path}"
                );
            }
        }
    }

    #[test]
    fn error_codes_in_the_schema_are_the_known_ones() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        let codes: Vec<&str> = codes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(codes, ErrorCode::KNOWN);
        for c in ErrorCode::KNOWN {
            let status = ErrorCode::parse(c).http_status().to_string();
            assert!(
                ApiErrors::responses().contains_key(&status),
                "{c}: status {status} undocumented"
            );
        }
    }
}
