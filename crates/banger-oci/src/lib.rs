//! OCI / Docker v2 registry pulls for banger.
//!
//! Owns: parsing and normalizing image references, platform selection in
//! image indexes, registry auth (anonymous, basic, bearer tokens via
//! oci-client, docker `config.json` and its credential helpers), verified
//! parallel blob downloads into a content-addressed cache shared by all
//! images ([`BlobCache`]), decoding the image config, and pruning
//! unreferenced blobs.
//!
//! Does not own: turning the layers into an ext4 base (that is
//! `banger_image::import_layers`), the image registry records, or the
//! daemon routes.
//!
//! Invariants: a file in the cache under its final name always hashes to
//! its name; plain HTTP is used only for loopback registries or registries
//! the caller marked insecure.

mod auth;
mod cache;
mod digest;
mod error;
mod platform;
mod pull;
mod reference;

pub use auth::{Credentials, default_docker_config, docker_config_auth};
pub use cache::{BlobCache, PruneReport};
pub use digest::{hex_of, sha256_of};
pub use error::OciError;
pub use platform::Platform;
pub use pull::{
    ImageConfig, LayerBlob, PullEvent, PullOptions, PulledImage, Resolved, layer_compression, pull,
    resolve,
};
pub use reference::{is_loopback_registry, normalized, parse_reference};
