//! The OpenAPI 3.1 description of the socket API, built from banger-api's
//! endpoint declarations (`banger_api::endpoints::ALL`) and the schemas of
//! their types: served at `GET /v1/openapi.json` and checked in as
//! `docs/openapi.json`.
//!
//! The checked-in copy is compared with the generated one by a test; after
//! changing a route or a wire type, regenerate it with
//! `BANGER_UPDATE_OPENAPI=1 cargo test -p bangerd openapi`.

use std::collections::BTreeMap;

use banger_api::endpoint::{Input, Method, Output};
use banger_api::{ErrorBody, ErrorCode, Event, endpoints};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
    Response, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

const DESCRIPTION: &str = "The banger daemon's API, HTTP/1.1 JSON on the Unix socket \
    `$XDG_RUNTIME_DIR/banger/.../bangerd.sock`. Every failure answers an `ErrorBody` whose \
    `code` fixes the status. Long operations stream NDJSON `Event`s when asked with \
    `Accept: application/x-ndjson`.";

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Patch => HttpMethod::Patch,
        Method::Delete => HttpMethod::Delete,
    }
}

fn json(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn binary() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::schema::KnownFormat::Binary,
        )))
        .into()
}

fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// What each error status means, for the codes that give it.
fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for c in codes {
        by_status
            .entry(c.http_status())
            .or_default()
            .push(c.as_str());
    }
    by_status
        .into_iter()
        .map(|(status, names)| {
            let r = ResponseBuilder::new()
                .description(names.join(" or "))
                .content("application/json", json(reference::<ErrorBody>()))
                .build();
            (status.to_string(), RefOr::T(r))
        })
        .collect()
}

/// The document, with the version of this build.
pub fn document() -> OpenApi {
    let mut paths: Paths = PathsBuilder::new().build();
    let mut schemas: Vec<(String, RefOr<Schema>)> = vec![
        (ErrorBody::name().into(), ErrorBody::schema()),
        (ErrorCode::name().into(), ErrorCode::schema()),
        (Event::name().into(), Event::schema()),
    ];
    ErrorBody::schemas(&mut schemas);
    Event::schemas(&mut schemas);
    for e in endpoints::ALL {
        let doc = (e.doc)();
        schemas.extend(doc.components);
        let mut op = OperationBuilder::new()
            .operation_id(Some(e.id))
            .tag(e.tag.name())
            .summary(Some(e.summary))
            .description((!e.description.is_empty()).then_some(e.description));
        for p in e.params {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(p.name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(p.description))
                    .schema(Some(String::schema())),
            );
        }
        for q in doc.query {
            op = op.parameter(q);
        }
        let body = match e.input {
            Input::None => None,
            Input::Json { empty_is_default } => Some(
                RequestBodyBuilder::new()
                    .content("application/json", json(doc.request))
                    .description(
                        empty_is_default.then_some("JSON; an empty body means all defaults"),
                    )
                    .required(Some(if empty_is_default {
                        Required::False
                    } else {
                        Required::True
                    }))
                    .build(),
            ),
            Input::Tar => Some(
                RequestBodyBuilder::new()
                    .content("application/x-tar", json(binary()))
                    .description(Some("a tar archive"))
                    .required(Some(Required::True))
                    .build(),
            ),
        };
        op = op.request_body(body);
        let (status, answer) = match e.output {
            Output::Json => (
                "200",
                ResponseBuilder::new()
                    .description("the answer")
                    .content("application/json", json(doc.response)),
            ),
            Output::Events => (
                "200",
                ResponseBuilder::new()
                    .description(
                        "the answer; with `Accept: application/x-ndjson`, a stream of events \
                         ending in `result` (whose value is the same) or `error`",
                    )
                    .content("application/json", json(doc.response))
                    .content("application/x-ndjson", json(reference::<Event>())),
            ),
            Output::Text => (
                "200",
                ResponseBuilder::new()
                    .description("plain text")
                    .content("text/plain", json(String::schema())),
            ),
            Output::Tar => (
                "200",
                ResponseBuilder::new()
                    .description("a tar archive")
                    .content("application/x-tar", json(binary())),
            ),
            Output::Upgrade(protocol) => (
                "101",
                ResponseBuilder::new().description(format!("switched to {protocol}")),
            ),
        };
        op = op.response(status, answer.build());
        for (status, r) in error_responses(e.errors) {
            op = op.response(status, r);
        }
        paths.add_path_operation(e.path, vec![http_method(e.method)], op.build());
    }
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let components = ComponentsBuilder::new().schemas_from_iter(schemas).build();
    let tags = banger_api::endpoint::Tag::ALL.map(|t| {
        TagBuilder::new()
            .name(t.name())
            .description(Some(t.description()))
            .build()
    });
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("bangerd")
                .version(banger_api::API_VERSION.to_string())
                .description(Some(DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .tags(Some(tags))
        .build()
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
    fn openapi_is_3_1_and_documents_every_declared_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = 0;
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                documented += 1;
                assert!(
                    endpoints::ALL.iter().any(|e| e.path == path
                        && e.method.as_str().eq_ignore_ascii_case(method)
                        && op["operationId"] == e.id),
                    "documented but not declared: {method} {path}"
                );
                // Every operation documents the error body.
                let r = &op["responses"];
                assert!(
                    r["400"].is_object() && r["500"].is_object(),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(documented, endpoints::ALL.len());
    }

    #[test]
    fn every_declared_endpoint_is_routed_once() {
        let problems = crate::api::routes().problems();
        assert!(problems.is_empty(), "{problems:?}");
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
        let statuses = error_responses(banger_api::endpoint::STANDARD_ERRORS);
        for c in ErrorCode::KNOWN {
            let status = ErrorCode::parse(c).http_status().to_string();
            assert!(
                statuses.contains_key(&status),
                "{c}: status {status} undocumented"
            );
        }
    }
}
