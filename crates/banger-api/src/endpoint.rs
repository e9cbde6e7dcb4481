//! What a route is: the [`Endpoint`] trait every route of the daemon
//! implements once (in `endpoints.rs`), with its method, path, path and
//! query parameters, request and response types, the errors it answers and
//! whether it streams. bangerd's router, the OpenAPI document and the CLI's
//! client are all built from these declarations, so a route cannot differ
//! between them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorCode;
use crate::doc::{BodyDoc, QueryDoc};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Upper case, as on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// The group a route is documented under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tag {
    Daemon,
    Kernels,
    Images,
    Vms,
    Snapshots,
}

impl Tag {
    /// Every tag, in document order.
    pub const ALL: [Tag; 5] = [
        Tag::Daemon,
        Tag::Kernels,
        Tag::Images,
        Tag::Vms,
        Tag::Snapshots,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tag::Daemon => "daemon",
            Tag::Kernels => "kernels",
            Tag::Images => "images",
            Tag::Vms => "vms",
            Tag::Snapshots => "snapshots",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Tag::Daemon => "The daemon itself",
            Tag::Kernels => "Imported kernels",
            Tag::Images => "Root filesystem images",
            Tag::Vms => "VMs and their lifecycle",
            Tag::Snapshots => "Saved VM states: snapshot, restore, fork, boot templates",
        }
    }
}

/// A `{name}` segment of a route's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
}

/// The `{reference}` of a VM.
pub const VM_REF: Param = Param {
    name: "reference",
    description: "vm name or id, or an unambiguous prefix of one",
};
/// The `{reference}` of a kernel.
pub const KERNEL_REF: Param = Param {
    name: "reference",
    description: "kernel name or id, or an unambiguous prefix of one",
};
/// The `{reference}` of an image.
pub const IMAGE_REF: Param = Param {
    name: "reference",
    description: "image name or id, or an unambiguous prefix of one",
};
/// The `{reference}` of a snapshot.
pub const SNAPSHOT_REF: Param = Param {
    name: "reference",
    description: "snapshot name or id, or an unambiguous prefix of one",
};

/// The body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// None.
    None,
    /// [`Endpoint::Request`] as JSON; `empty_is_default`: an empty body
    /// means every field's default.
    Json { empty_is_default: bool },
    /// A tar stream (`application/x-tar`).
    Tar,
}

/// What a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// [`Endpoint::Response`] as JSON.
    Json,
    /// A long operation: [`Endpoint::Response`] as JSON, or with `Accept:
    /// application/x-ndjson` a stream of [`crate::Event`]s ending in
    /// `result` (whose value is the same) or `error`.
    Events,
    /// Plain text, streamed.
    Text,
    /// A tar stream.
    Tar,
    /// `101 Switching Protocols` to this protocol, then its bytes.
    Upgrade(&'static str),
}

/// A query string with no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct NoQuery {}

/// The errors every route may answer: what [`ErrorCode::http_status`] can
/// give besides success.
pub const STANDARD_ERRORS: &[ErrorCode] = &[
    ErrorCode::InvalidArgument,
    ErrorCode::NotFound,
    ErrorCode::Ambiguous,
    ErrorCode::AlreadyExists,
    ErrorCode::Conflict,
    ErrorCode::Internal,
    ErrorCode::NoSpace,
];

/// One route of the daemon.
pub trait Endpoint: 'static {
    /// A stable name: the OpenAPI `operationId`.
    const ID: &'static str;
    /// The name of the declaring type (`VmsStart`), for the drift tests.
    const TYPE_NAME: &'static str;
    const METHOD: Method;
    /// The path, `{name}` for each of [`Self::PARAMS`] in order.
    const PATH: &'static str;
    const TAG: Tag;
    const SUMMARY: &'static str;
    /// More words, or empty.
    const DESCRIPTION: &'static str;
    const PARAMS: &'static [Param];
    const INPUT: Input;
    const OUTPUT: Output;
    const ERRORS: &'static [ErrorCode] = STANDARD_ERRORS;
    /// The query string ([`NoQuery`] when it takes none).
    type Query: Serialize + DeserializeOwned + Default + Send + 'static + QueryDoc;
    /// The JSON body (`()` when [`Self::INPUT`] is not JSON).
    type Request: Serialize + DeserializeOwned + Send + 'static + BodyDoc;
    /// The JSON answer (`()` when [`Self::OUTPUT`] is not JSON).
    type Response: Serialize + DeserializeOwned + Send + 'static + BodyDoc;

    /// The request target for these path parameters and query.
    fn target(params: &[&str], query: &Self::Query) -> String {
        let mut out = String::new();
        let mut rest = Self::PATH;
        let mut values = params.iter();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            out.push_str(&segment(values.next().copied().unwrap_or_default()));
            rest = &rest[close..];
        }
        out.push_str(rest);
        let q = serde_urlencoded::to_string(query).unwrap_or_default();
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q);
        }
        out
    }
}

/// A path segment for a user-typed value: unreserved bytes kept, the rest
/// percent-encoded.
pub fn segment(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An endpoint's declaration as data: what the router, the document and
/// the drift tests walk.
#[derive(Debug, Clone, Copy)]
pub struct EndpointInfo {
    pub id: &'static str,
    pub type_name: &'static str,
    pub method: Method,
    pub path: &'static str,
    pub tag: Tag,
    pub summary: &'static str,
    pub description: &'static str,
    pub params: &'static [Param],
    pub input: Input,
    pub output: Output,
    pub errors: &'static [ErrorCode],
    /// Its schemas, for the document.
    #[cfg(feature = "openapi")]
    pub doc: fn() -> EndpointDoc,
}

impl EndpointInfo {
    /// The declaration of `E`.
    pub const fn of<E: Endpoint>() -> EndpointInfo {
        EndpointInfo {
            id: E::ID,
            type_name: E::TYPE_NAME,
            method: E::METHOD,
            path: E::PATH,
            tag: E::TAG,
            summary: E::SUMMARY,
            description: E::DESCRIPTION,
            params: E::PARAMS,
            input: E::INPUT,
            output: E::OUTPUT,
            errors: E::ERRORS,
            #[cfg(feature = "openapi")]
            doc: EndpointDoc::of::<E>,
        }
    }
}

/// One endpoint's schemas.
#[cfg(feature = "openapi")]
#[allow(missing_debug_implementations)] // utoipa's types have no Debug
pub struct EndpointDoc {
    pub request: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    pub response: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    pub query: Vec<utoipa::openapi::path::Parameter>,
    pub components: crate::doc::Components,
}

#[cfg(feature = "openapi")]
impl EndpointDoc {
    pub fn of<E: Endpoint>() -> EndpointDoc {
        let mut components = Vec::new();
        E::Request::components(&mut components);
        E::Response::components(&mut components);
        EndpointDoc {
            request: E::Request::schema(),
            response: E::Response::schema(),
            query: E::Query::parameters(),
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints;

    #[test]
    fn targets_fill_the_path_and_encode_values() {
        assert_eq!(
            endpoints::VmsStart::target(&["web"], &NoQuery {}),
            "/v1/vms/web/start"
        );
        assert_eq!(
            endpoints::VmsShow::target(&["a b/c"], &NoQuery {}),
            "/v1/vms/a%20b%2Fc"
        );
        let q = crate::VmRmQuery { force: true };
        assert_eq!(
            endpoints::VmsRm::target(&["web"], &q),
            "/v1/vms/web?force=true"
        );
        assert_eq!(endpoints::VmsList::target(&[], &NoQuery {}), "/v1/vms");
    }

    #[test]
    fn every_route_is_declared_once_and_its_params_match_its_path() {
        let mut seen = std::collections::HashSet::new();
        for e in endpoints::ALL {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method.as_str(),
                e.path
            );
            let names: Vec<&str> = e
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: Vec<&str> = e.params.iter().map(|p| p.name).collect();
            assert_eq!(names, declared, "{}", e.id);
            assert!(e.path.starts_with(crate::API_PREFIX), "{}", e.id);
        }
        let ids: std::collections::HashSet<_> = endpoints::ALL.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), endpoints::ALL.len(), "operation ids are unique");
    }
}
