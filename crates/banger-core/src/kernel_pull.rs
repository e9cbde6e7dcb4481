//! `banger kernel pull`: the catalog of pinned kernels (shipped here and
//! extended by `[[kernel_catalog]]` in config.toml), the mirror their pool
//! paths are fetched from, and a download that is hashed while it streams
//! and imported only when the SHA-256 matches.

use std::io::Write;
use std::path::Path;

use banger_api::{
    KernelCatalogEntry, KernelFileFormat, KernelImportRequest, KernelPullRequest, KernelRecord,
    validate,
};
use sha2::{Digest, Sha256};

use crate::Layout;
use crate::config::Config;
use crate::error::{CoreError, CoreResult};
use crate::events::{EventSink, stage};
use crate::kernels::KernelService;
use crate::scratch::Scratch;

/// Kernels shipped in banger. Only entries whose checksum was verified
/// against the real file: the SHA-256 is the one apt's index gives
/// (`apt-cache show PACKAGE`: `Filename`, `SHA256`), checked against the
/// downloaded package. A path (not a URL) lives on the Debian security
/// archive, `kernel_mirror`.
const BUILTIN: &[(&str, &str, &str, KernelFileFormat)] = &[(
    "debian-cloud-6.1.0-57",
    "pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb",
    "4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754",
    KernelFileFormat::Deb,
)];

/// The catalog: shipped entries, then the config's, which replace shipped
/// ones of the same name.
pub fn catalog(config: &Config) -> Vec<KernelCatalogEntry> {
    let mut out: Vec<KernelCatalogEntry> = BUILTIN
        .iter()
        .map(|(name, url, sha256, format)| KernelCatalogEntry {
            name: (*name).to_string(),
            url: (*url).to_string(),
            sha256: (*sha256).to_string(),
            format: *format,
            origin: "builtin".into(),
        })
        .collect();
    for e in &config.kernel_catalog {
        out.retain(|b| b.name != e.name);
        out.push(KernelCatalogEntry {
            name: e.name.clone(),
            url: e.url.clone(),
            sha256: e.sha256.to_ascii_lowercase(),
            format: e.format,
            origin: "config".into(),
        });
    }
    out
}

/// Where an entry is fetched from: its URL, or its pool path on `mirror`.
pub fn entry_url(entry: &KernelCatalogEntry, mirror: Option<&str>) -> CoreResult<String> {
    if entry.url.starts_with("http://") || entry.url.starts_with("https://") {
        return Ok(entry.url.clone());
    }
    match mirror {
        Some(m) => Ok(format!(
            "{}/{}",
            m.trim_end_matches('/'),
            entry.url.trim_start_matches('/')
        )),
        None => Err(CoreError::invalid(format!(
            "catalog entry {} is a path on a Debian mirror and no kernel_mirror is known: \
             set kernel_mirror in config.toml (the host's apt sources name no -security suite)",
            entry.name
        ))),
    }
}

/// Streams `url` into `out`, hashing as it goes; returns the hex SHA-256.
async fn download(url: &str, out: &Path, events: EventSink<'_>) -> CoreResult<String> {
    let fail = |e: &dyn std::fmt::Display| CoreError::internal(format!("download {url}: {e}"));
    // reqwest is built without a default crypto provider (see banger-oci).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| fail(&e))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(&crate::error::chain(&e)))?;
    if !resp.status().is_success() {
        return Err(fail(&resp.status()));
    }
    let total = resp.content_length();
    let mut file = std::fs::File::create(out).map_err(|e| fail(&e))?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut last = std::time::Instant::now();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| fail(&crate::error::chain(&e)))?
    {
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| fail(&e))?;
        done += chunk.len() as u64;
        // Ten events a second at most, and the last one.
        if last.elapsed() >= std::time::Duration::from_millis(100) || Some(done) == total {
            last = std::time::Instant::now();
            events(banger_api::Event::Progress {
                stage: "download".into(),
                current: done,
                total,
            });
        }
    }
    file.sync_all().map_err(|e| fail(&e))?;
    Ok(hex::encode(hasher.finalize()))
}

impl KernelService {
    /// Fetches a catalog entry, checks its SHA-256, then imports it as
    /// `banger kernel import` would. A mismatch leaves nothing behind: the
    /// download lives in a scratch directory under `tmp/`.
    pub async fn pull(
        &self,
        req: &KernelPullRequest,
        config: &Config,
        layout: &Layout,
        events: EventSink<'_>,
    ) -> CoreResult<KernelRecord> {
        let entry = catalog(config)
            .into_iter()
            .find(|e| e.name == req.entry)
            .ok_or_else(|| {
                CoreError::not_found(format!(
                    "no kernel {:?} in the catalog; see `banger kernel catalog`",
                    req.entry
                ))
            })?;
        let name = req.name.clone().unwrap_or_else(|| entry.name.clone());
        validate::artifact_name(&name, "kernel name").map_err(CoreError::invalid)?;
        if self.list()?.iter().any(|k| k.name == name) {
            return Err(CoreError::already_exists(format!(
                "a kernel named {name:?} exists already; remove it or pull with --name"
            )));
        }
        let url = entry_url(&entry, config.kernel_mirror.as_deref())?;

        let scratch = Scratch::new(layout, "kernel-pull")
            .map_err(|e| crate::error::internal("create scratch directory", &e))?;
        let file_name = match entry.format {
            KernelFileFormat::Deb => "kernel.deb",
            KernelFileFormat::Vmlinux => "vmlinux",
            KernelFileFormat::BzImage => "bzImage",
        };
        let file = scratch.path().join(file_name);
        stage(events, "download", format!("fetching {url}"));
        let actual = download(&url, &file, events).await?;
        if actual != entry.sha256 {
            return Err(CoreError::invalid(format!(
                "kernel {}: sha256 mismatch for {url}: expected {}, got {actual}; nothing was imported",
                entry.name, entry.sha256
            )));
        }
        let import = KernelImportRequest {
            path: file.display().to_string(),
            initrd: None,
            name: Some(name),
            deb: entry.format == KernelFileFormat::Deb,
        };
        let record = tokio::task::block_in_place(|| self.import(&import, events));
        drop(scratch);
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_entries_extend_and_replace_the_builtin_ones() {
        let mut config = Config::default();
        config
            .kernel_catalog
            .push(crate::config::KernelCatalogConfig {
                name: "mine".into(),
                url: "http://127.0.0.1:1/k".into(),
                sha256: "AB".repeat(32),
                format: KernelFileFormat::BzImage,
            });
        let c = catalog(&config);
        assert_eq!(c.len(), BUILTIN.len() + 1);
        let mine = c.iter().find(|e| e.name == "mine").unwrap();
        assert_eq!(mine.sha256, "ab".repeat(32));
        assert_eq!(entry_url(mine, None).unwrap(), "http://127.0.0.1:1/k");
        let debian = c.iter().find(|e| e.origin == "builtin").unwrap();
        assert_eq!(
            entry_url(debian, Some("http://m.example/debian-security/")).unwrap(),
            format!("http://m.example/debian-security/{}", debian.url)
        );
        let err = entry_url(debian, None).unwrap_err();
        assert!(err.to_string().contains("set kernel_mirror"), "{err}");
    }
}
