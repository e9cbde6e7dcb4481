//! Resolving and pulling images: manifest (and index → platform) fetch and
//! verification, parallel verified blob downloads into the [`BlobCache`],
//! and decoding the image config.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use banger_image::Compression;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::cache::PARTIAL_PREFIX;
use crate::digest::{Hasher, hex_of, sha256_of};
use crate::reference::{is_loopback_registry, normalized, parse_reference};
use crate::{BlobCache, Credentials, OciError, Platform};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Image configs are small JSON documents; a bigger one is hostile.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Progress is reported at most once per this many bytes of a blob.
const PROGRESS_STEP: u64 = 1 << 20;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    pub credentials: Credentials,
    /// Allow plain HTTP to a registry that is not on loopback.
    pub insecure: bool,
    /// Blobs downloaded at once.
    pub max_parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::default(),
            credentials: Credentials::Anonymous,
            insecure: false,
            max_parallel: 3,
        }
    }
}

/// What a pull reports while it runs. Blob events name the blob by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The reference resolved to this platform manifest.
    Resolved {
        reference: String,
        manifest_digest: String,
    },
    /// The blob was already in the cache; nothing is downloaded.
    BlobCached { digest: String, size: u64 },
    /// Bytes of one blob downloaded so far (first with `done == 0`).
    BlobProgress {
        digest: String,
        done: u64,
        total: u64,
    },
    /// The blob was downloaded, verified and moved into the cache.
    BlobDone { digest: String, size: u64 },
    /// Bytes downloaded over all blobs of this pull that were not cached.
    Progress { done: u64, total: u64 },
}

/// The config fields banger honours at `vm run` (OCI image config `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// One layer of a pulled image, verified, in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub digest: String,
    pub media_type: String,
    pub compression: Compression,
    /// The blob file in the cache.
    pub path: PathBuf,
    /// Compressed size in bytes.
    pub size: u64,
}

/// A pulled image: every blob is in the cache and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// Normalized, e.g. `docker.io/library/debian:bookworm`.
    pub reference: String,
    /// Digest of the platform's image manifest (what [`resolve`] returns).
    pub manifest_digest: String,
    /// Digest of the index or manifest list the reference named, if any.
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub config: ImageConfig,
    /// Bottom layer first, in the order they must be applied.
    pub layers: Vec<LayerBlob>,
}

impl PulledImage {
    /// Every blob this image needs from the cache (config and layers), for
    /// [`BlobCache::prune`].
    pub fn blob_digests(&self) -> Vec<String> {
        let mut all = vec![self.config_digest.clone()];
        all.extend(self.layers.iter().map(|l| l.digest.clone()));
        all
    }
}

/// What a reference currently points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub reference: String,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
}

/// A manifest or index, as much of it as a pull needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    platform: Option<DescPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
struct DescPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigDoc {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(default)]
    config: Option<RuntimeConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

/// A connected client for one reference.
struct Session {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    registry: String,
}

/// The platform manifest a reference selects, fetched and verified.
struct Selected {
    manifest_digest: String,
    index_digest: Option<String>,
    doc: Option<ManifestDoc>,
}

impl Session {
    async fn open(input: &str, options: &PullOptions) -> Result<Session, OciError> {
        let reference = parse_reference(input)?;
        let registry = reference.registry().to_string();
        // ring is the one provider compiled in; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if options.insecure || is_loopback_registry(&registry) {
            ClientProtocol::HttpsExcept(vec![
                registry.clone(),
                reference.resolve_registry().to_string(),
            ])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|source| OciError::Registry {
            registry: registry.clone(),
            op: "create client".into(),
            source,
        })?;
        let auth = options.credentials.for_registry(&registry).await?;
        Ok(Session {
            client,
            reference,
            auth,
            registry,
        })
    }

    fn registry_err(&self, op: String, source: OciDistributionError) -> OciError {
        match source {
            OciDistributionError::AuthenticationFailure(detail) => OciError::Auth {
                registry: self.registry.clone(),
                detail,
            },
            OciDistributionError::UnauthorizedError { .. } => OciError::Auth {
                registry: self.registry.clone(),
                detail: format!("{op}: not authorized"),
            },
            source => OciError::Registry {
                registry: self.registry.clone(),
                op,
                source,
            },
        }
    }

    /// Fetch a manifest by `reference`, checking it hashes to `want` when
    /// the digest is known in advance.
    async fn fetch_manifest(
        &self,
        reference: &Reference,
        want: Option<&str>,
    ) -> Result<(ManifestDoc, String), OciError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.registry_err(format!("fetch manifest {}", reference.whole()), e))?;
        // The registry's Docker-Content-Digest header is not trusted: the
        // digest is what the bytes hash to.
        let actual = sha256_of(&bytes);
        if let Some(want) = want
            && want != actual
        {
            return Err(OciError::DigestMismatch {
                what: "manifest".into(),
                digest: want.to_string(),
                expected: want.to_string(),
                actual,
            });
        }
        let doc: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| OciError::Malformed {
            what: format!("manifest {actual}"),
            detail: e.to_string(),
        })?;
        if doc.schema_version != Some(2) {
            return Err(OciError::UnsupportedMediaType {
                what: format!("manifest {actual}"),
                media_type: format!(
                    "schemaVersion {}",
                    doc.schema_version
                        .map_or("missing".into(), |v| v.to_string())
                ),
            });
        }
        if let Some(mt) = &doc.media_type
            && !MANIFEST_TYPES.contains(&mt.as_str())
        {
            return Err(OciError::UnsupportedMediaType {
                what: format!("manifest {actual}"),
                media_type: mt.clone(),
            });
        }
        Ok((doc, actual))
    }

    /// Resolve the reference to one platform manifest. With `fetch_child`
    /// false an index entry's digest is returned without fetching it.
    async fn select(&self, platform: &Platform, fetch_child: bool) -> Result<Selected, OciError> {
        let (doc, digest) = self
            .fetch_manifest(&self.reference, self.reference.digest())
            .await?;
        let Some(entries) = &doc.manifests else {
            return Ok(Selected {
                manifest_digest: digest,
                index_digest: None,
                doc: Some(doc),
            });
        };
        let chosen = entries
            .iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
            })
            .ok_or_else(|| OciError::NoMatchingPlatform {
                reference: normalized(&self.reference),
                platform: platform.to_string(),
                available: available(entries),
            })?;
        hex_of(&chosen.digest)?;
        if !fetch_child {
            return Ok(Selected {
                manifest_digest: chosen.digest.clone(),
                index_digest: Some(digest),
                doc: None,
            });
        }
        let child_ref = self.reference.clone_with_digest(chosen.digest.clone());
        let (child, child_digest) = self
            .fetch_manifest(&child_ref, Some(&chosen.digest))
            .await?;
        if child.manifests.is_some() {
            return Err(OciError::Malformed {
                what: format!("manifest {child_digest}"),
                detail: "an index inside an index".into(),
            });
        }
        Ok(Selected {
            manifest_digest: child_digest,
            index_digest: Some(digest),
            doc: Some(child),
        })
    }

    /// Download one blob into the cache, verifying size and digest while
    /// streaming; the file gets its final name only when both match.
    async fn download(
        &self,
        cache: &BlobCache,
        blob: &Descriptor,
        what: &str,
        overall: &Overall<'_>,
    ) -> Result<(), OciError> {
        let dir = cache.sha256_dir();
        let final_path = cache.path_of(&blob.digest)?;
        let tmp = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| OciError::io("create temporary blob in", &dir, e))?;
        let std_file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| OciError::io("open", tmp.path(), e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let desc = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &desc)
            .await
            .map_err(|e| self.registry_err(format!("fetch {what} {}", blob.digest), e))?;
        let mut hasher = Hasher::default();
        let mut done = 0u64;
        let mut reported = 0u64;
        (overall.emit)(PullEvent::BlobProgress {
            digest: blob.digest.clone(),
            done: 0,
            total: blob.size,
        });
        let mut stream_error = None;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client verifies digests too and fails the end of the
                // stream; our own hash below names the blob and both digests.
                Err(e) => {
                    stream_error = Some(e);
                    break;
                }
            };
            done += chunk.len() as u64;
            if done > blob.size {
                // Stop a registry that sends more than it promised.
                return Err(OciError::SizeMismatch {
                    what: what.to_string(),
                    digest: blob.digest.clone(),
                    expected: blob.size,
                    actual: done,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| OciError::io("write", tmp.path(), e))?;
            overall.add(chunk.len() as u64);
            if done - reported >= PROGRESS_STEP || done == blob.size {
                reported = done;
                (overall.emit)(PullEvent::BlobProgress {
                    digest: blob.digest.clone(),
                    done,
                    total: blob.size,
                });
            }
        }
        let actual = hasher.finish();
        if let Some(e) = stream_error
            && (done != blob.size || actual == blob.digest)
        {
            return Err(self.registry_err(
                format!("download {what} {}", blob.digest),
                OciDistributionError::IoError(e),
            ));
        }
        if actual != blob.digest {
            return Err(OciError::DigestMismatch {
                what: what.to_string(),
                digest: blob.digest.clone(),
                expected: blob.digest.clone(),
                actual,
            });
        }
        if done != blob.size {
            return Err(OciError::SizeMismatch {
                what: what.to_string(),
                digest: blob.digest.clone(),
                expected: blob.size,
                actual: done,
            });
        }
        // tokio's File hands writes to a blocking thread and reports a
        // failed one (ENOSPC) only on the next write or flush, never on
        // sync_all: without this flush a truncated blob was renamed into
        // the cache as verified.
        file.flush()
            .await
            .map_err(|e| OciError::io("write", tmp.path(), e))?;
        file.sync_all()
            .await
            .map_err(|e| OciError::io("sync", tmp.path(), e))?;
        drop(file);
        tmp.persist(&final_path)
            .map_err(|e| OciError::io("move blob into", &final_path, e.error))?;
        (overall.emit)(PullEvent::BlobDone {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        Ok(())
    }
}

/// Overall byte progress shared by concurrent downloads.
struct Overall<'a> {
    done: AtomicU64,
    total: u64,
    emit: &'a (dyn Fn(PullEvent) + Send + Sync),
}

impl Overall<'_> {
    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        (self.emit)(PullEvent::Progress {
            done,
            total: self.total,
        });
    }
}

fn available(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The compression a layer media type declares; `None` if it is not a
/// filesystem layer banger can apply.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// What `reference` points at for `options.platform`: one manifest fetch
/// (an index entry's digest is taken from the index). Compare with a
/// stored digest to skip a pull of an unchanged image.
pub async fn resolve(reference: &str, options: &PullOptions) -> Result<Resolved, OciError> {
    let session = Session::open(reference, options).await?;
    let selected = session.select(&options.platform, false).await?;
    Ok(Resolved {
        reference: normalized(&session.reference),
        manifest_digest: selected.manifest_digest,
        index_digest: selected.index_digest,
    })
}

/// Pull `reference` into `cache`: blobs already cached are not fetched
/// again; the others download `options.max_parallel` at a time, each
/// verified before it enters the cache.
pub async fn pull(
    reference: &str,
    options: &PullOptions,
    cache: &BlobCache,
    on_event: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<PulledImage, OciError> {
    let session = Session::open(reference, options).await?;
    let selected = session.select(&options.platform, true).await?;
    let manifest_digest = selected.manifest_digest;
    let doc = selected.doc.ok_or_else(|| OciError::Malformed {
        what: format!("manifest {manifest_digest}"),
        detail: "not fetched".into(),
    })?;
    let norm = normalized(&session.reference);
    on_event(PullEvent::Resolved {
        reference: norm.clone(),
        manifest_digest: manifest_digest.clone(),
    });
    let manifest_what = format!("manifest {manifest_digest}");
    let config_desc = doc.config.ok_or_else(|| OciError::Malformed {
        what: manifest_what.clone(),
        detail: "no config".into(),
    })?;
    hex_of(&config_desc.digest)?;
    if config_desc.size > MAX_CONFIG_BYTES {
        return Err(OciError::Malformed {
            what: format!("config {}", config_desc.digest),
            detail: format!(
                "{} bytes is too large for an image config",
                config_desc.size
            ),
        });
    }
    let layer_descs = doc.layers.unwrap_or_default();
    let mut layers = Vec::with_capacity(layer_descs.len());
    for (i, l) in layer_descs.iter().enumerate() {
        hex_of(&l.digest)?;
        let compression =
            layer_compression(&l.media_type).ok_or_else(|| OciError::UnsupportedMediaType {
                what: format!("layer {i} ({})", l.digest),
                media_type: l.media_type.clone(),
            })?;
        layers.push(LayerBlob {
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            compression,
            path: cache.path_of(&l.digest)?,
            size: l.size,
        });
    }

    // Everything to fetch, once per digest, config first.
    let mut wanted: Vec<(Descriptor, String)> = vec![(config_desc.clone(), "config".into())];
    for (i, l) in layer_descs.iter().enumerate() {
        if !wanted.iter().any(|(d, _)| d.digest == l.digest) {
            wanted.push((l.clone(), format!("layer {i}")));
        }
    }
    let mut missing = Vec::new();
    for (desc, what) in wanted {
        if cache.has(&desc.digest, desc.size)? {
            on_event(PullEvent::BlobCached {
                digest: desc.digest.clone(),
                size: desc.size,
            });
        } else {
            missing.push((desc, what));
        }
    }
    let overall = Overall {
        done: AtomicU64::new(0),
        total: missing.iter().map(|(d, _)| d.size).sum(),
        emit: on_event,
    };
    let parallel = options.max_parallel.max(1);
    // The futures are made up front (they do nothing until polled): a
    // closure over references inside the stream type trips rustc's Send
    // inference ("FnOnce is not general enough") when callers spawn us.
    let downloads: Vec<_> = missing
        .iter()
        .map(|(desc, what)| session.download(cache, desc, what, &overall))
        .collect();
    futures_util::stream::iter(downloads)
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;

    let config_path = cache.path_of(&config_desc.digest)?;
    let config_bytes =
        std::fs::read(&config_path).map_err(|e| OciError::io("read", &config_path, e))?;
    let config_doc: ConfigDoc =
        serde_json::from_slice(&config_bytes).map_err(|e| OciError::Malformed {
            what: format!("config {}", config_desc.digest),
            detail: e.to_string(),
        })?;
    // A single-platform image for another machine would not boot; an
    // index was already matched by its entries.
    if selected.index_digest.is_none()
        && let (Some(os), Some(arch)) = (&config_doc.os, &config_doc.architecture)
        && !options.platform.matches(os, arch, None)
    {
        return Err(OciError::PlatformMismatch {
            reference: norm,
            requested: options.platform.to_string(),
            actual: format!("{os}/{arch}"),
        });
    }
    let rc = config_doc.config.unwrap_or_default();
    Ok(PulledImage {
        reference: norm,
        manifest_digest,
        index_digest: selected.index_digest,
        config_digest: config_desc.digest,
        config: ImageConfig {
            env: rc.env.unwrap_or_default(),
            working_dir: rc.working_dir.filter(|w| !w.is_empty()),
            user: rc.user.filter(|u| !u.is_empty()),
            entrypoint: rc.entrypoint.unwrap_or_default(),
            cmd: rc.cmd.unwrap_or_default(),
        },
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            layer_compression("application/vnd.wasm.content.layer.v1+wasm"),
            None
        );
    }
}
