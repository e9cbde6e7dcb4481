//! How an endpoint's bodies and query describe themselves for the OpenAPI
//! document. With the `openapi` feature, [`BodyDoc`] and [`QueryDoc`] give
//! schemas (named types by reference, with their components); without
//! it they are markers
//! every type has, so the CLI builds without utoipa.

#[cfg(not(feature = "openapi"))]
mod plain {
    /// A body type of an endpoint.
    pub trait BodyDoc {}
    impl<T: ?Sized> BodyDoc for T {}
    /// A query type of an endpoint.
    pub trait QueryDoc {}
    impl<T: ?Sized> QueryDoc for T {}
}
#[cfg(not(feature = "openapi"))]
pub use plain::{BodyDoc, QueryDoc};

#[cfg(feature = "openapi")]
pub use documented::{BodyDoc, Components, QueryDoc};

#[cfg(feature = "openapi")]
mod documented {
    use utoipa::openapi::path::{Parameter, ParameterIn};
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
    use utoipa::openapi::{Ref, RefOr};
    use utoipa::{IntoParams, PartialSchema, ToSchema};

    /// Named schemas a document needs, by name.
    pub type Components = Vec<(String, RefOr<Schema>)>;

    /// A body type of an endpoint, as the document shows it.
    pub trait BodyDoc {
        /// Its schema: a reference for a named type.
        fn schema() -> RefOr<Schema>;
        /// Push the named schemas it refers to.
        fn components(out: &mut Components);
    }

    /// A query type of an endpoint: its parameters.
    pub trait QueryDoc {
        fn parameters() -> Vec<Parameter>;
    }

    impl<T: IntoParams> QueryDoc for T {
        fn parameters() -> Vec<Parameter> {
            T::into_params(|| Some(ParameterIn::Query))
        }
    }

    /// Nothing: no body.
    impl BodyDoc for () {
        fn schema() -> RefOr<Schema> {
            utoipa::openapi::schema::empty().into()
        }
        fn components(_: &mut Components) {}
    }

    /// Any JSON object (the OpenAPI document itself).
    impl BodyDoc for serde_json::Value {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Object))
                .into()
        }
        fn components(_: &mut Components) {}
    }

    impl<T: BodyDoc> BodyDoc for Vec<T> {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new().items(T::schema()).into()
        }
        fn components(out: &mut Components) {
            T::components(out);
        }
    }

    /// A named body type: referenced, and defined under components.
    macro_rules! named {
        ($($t:ty),* $(,)?) => {$(
            impl BodyDoc for $t {
                fn schema() -> RefOr<Schema> {
                    RefOr::Ref(Ref::from_schema_name(<$t as ToSchema>::name()))
                }
                fn components(out: &mut Components) {
                    out.push((<$t as ToSchema>::name().into_owned(), <$t as PartialSchema>::schema()));
                    <$t as ToSchema>::schemas(out);
                }
            }
        )*};
    }

    named!(
        crate::DaemonInfo,
        crate::DaemonStopReply,
        crate::ConfigReply,
        crate::KernelRecord,
        crate::KernelImportRequest,
        crate::KernelPullRequest,
        crate::KernelCatalogEntry,
        crate::ImageRecord,
        crate::ImageImportRequest,
        crate::ImagePullRequest,
        crate::ImageCommitRequest,
        crate::PruneReport,
        crate::VmRecord,
        crate::VmCreateRequest,
        crate::VmSetRequest,
        crate::VmStartRequest,
        crate::VmStopRequest,
        crate::VmRebaseRequest,
        crate::StartReport,
        crate::CopyInReport,
        banger_proto::GuestStats,
        crate::SnapshotRecord,
        crate::VmSnapshotRequest,
        crate::VmRestoreRequest,
        crate::VmForkRequest,
        crate::TemplateInfo,
        crate::WarmRequest,
        banger_proto::ListeningPort,
        crate::VmSshAccess,
    );

    /// A VM's stats with the guest's report of type `G`, whose schema the
    /// generic one refers to by name.
    impl<G: BodyDoc + ToSchema> BodyDoc for crate::VmStats<G>
    where
        crate::VmStats<G>: ToSchema,
    {
        fn schema() -> RefOr<Schema> {
            RefOr::Ref(Ref::from_schema_name(
                <crate::VmStats<G> as ToSchema>::name(),
            ))
        }
        fn components(out: &mut Components) {
            out.push((
                <crate::VmStats<G> as ToSchema>::name().into_owned(),
                <crate::VmStats<G> as PartialSchema>::schema(),
            ));
            <crate::VmStats<G> as ToSchema>::schemas(out);
            G::components(out);
        }
    }
}
