//! OpenAPI schemas of the types whose serde is written by hand, so the
//! derived document says what the wire really carries.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, schema};
use utoipa::{PartialSchema, ToSchema};

use crate::{ByteSize, Egress, ErrorCode};

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        // The codes this daemon sends. Clients must accept others (a newer
        // daemon's), which `ErrorCode::Unknown` does.
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(ErrorCode::KNOWN))
            .description(Some(
                "Error class; it fixes the HTTP status. Clients must accept codes not listed.",
            ))
            .into()
    }
}

impl ToSchema for ErrorCode {}

impl PartialSchema for ByteSize {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .format(Some(schema::SchemaFormat::KnownFormat(
                        schema::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
                    .description(Some("bytes")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .description(Some("a size with a binary unit: `8G`, `512MiB`")),
            )
            .description(Some(
                "A size in bytes, as an integer or a string with a unit (K, M, G, T; binary).",
            ))
            .into()
    }
}

impl ToSchema for ByteSize {}

impl PartialSchema for Egress {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "Where the VM may send traffic: `all`, `none`, or comma-separated `TARGET[:PORTS[/tcp|/udp]]` (an IPv4 address, a network or a DNS name).",
            ))
            .into()
    }
}

impl ToSchema for Egress {}
