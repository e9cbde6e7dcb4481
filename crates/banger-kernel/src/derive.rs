//! What an import derives from the kernel it was given: an ELF `vmlinux`
//! when it came as a bzImage, its config (from the package or IKCONFIG),
//! and which VMMs can boot it.

use std::fs;
use std::path::Path;

use crate::compat::{KernelFacts, VmmSupport, assess};
use crate::kconfig::KernelConfig;
use crate::modules::ModuleIndex;
use crate::probe::KernelFormat;
use crate::staging::Staging;
use crate::vmlinux::{extract_vmlinux, parse_elf};
use crate::{ImportedKernel, KernelError};

/// File names inside the kernel directory.
pub(crate) const BZIMAGE: &str = "vmlinuz";
pub(crate) const VMLINUX: &str = "vmlinux";
pub(crate) const CONFIG: &str = "config";

/// What [`derive`] found, relative to the staging directory.
#[derive(Debug)]
pub(crate) struct Derived {
    pub has_vmlinux: bool,
    /// Why no vmlinux could be derived, when it could not.
    pub vmlinux_error: Option<String>,
    pub has_config: bool,
    pub support: Vec<VmmSupport>,
}

/// Runs in the staging directory `dir`, which holds `vmlinuz` or `vmlinux`
/// (per `format`), maybe `config`, maybe `modules/<release>` (`modules`).
/// A kernel whose vmlinux cannot be derived is still imported (QEMU boots
/// the bzImage); the reason is kept for the verdict. Only I/O fails.
pub(crate) fn derive(
    dir: &Path,
    format: KernelFormat,
    modules: Option<&Path>,
) -> Result<Derived, KernelError> {
    let vmlinux_path = dir.join(VMLINUX);
    let elf = match format {
        KernelFormat::BzImage => match extract_vmlinux(&dir.join(BZIMAGE), &vmlinux_path) {
            Ok((_, info)) => Ok(info),
            Err(KernelError::NotAKernel { reason, .. }) => Err(reason),
            Err(e) => return Err(e),
        },
        KernelFormat::Elf => {
            let bytes = fs::read(&vmlinux_path).map_err(KernelError::io("read", &vmlinux_path))?;
            parse_elf(&bytes).map_err(str::to_string)
        }
    };

    let config_path = dir.join(CONFIG);
    let config = if config_path.is_file() {
        let text =
            fs::read_to_string(&config_path).map_err(KernelError::io("read", &config_path))?;
        Some(KernelConfig::parse(&text))
    } else if elf.is_ok() {
        let bytes = fs::read(&vmlinux_path).map_err(KernelError::io("read", &vmlinux_path))?;
        let found = KernelConfig::ikconfig(&bytes);
        if let Some(text) = &found {
            fs::write(&config_path, text).map_err(KernelError::io("write", &config_path))?;
        }
        found.map(|t| KernelConfig::parse(&t))
    } else {
        None
    };
    let index = match modules {
        Some(m) => Some(ModuleIndex::open(m)?),
        None => None,
    };
    let support = assess(&KernelFacts {
        config: config.as_ref(),
        modules: index.as_ref(),
        has_bzimage: format == KernelFormat::BzImage,
        vmlinux: elf.as_ref().map_err(String::as_str),
    });
    Ok(Derived {
        has_vmlinux: elf.is_ok(),
        vmlinux_error: elf.err(),
        has_config: config.is_some(),
        support,
    })
}

/// Derives what [`derive`] finds in the staging directory and describes
/// the result at its final place. The caller still calls `finish`.
pub(crate) fn describe(
    staging: &Staging,
    format: KernelFormat,
    initrd_rel: Option<&Path>,
    modules_rel: Option<&Path>,
    release: Option<String>,
) -> Result<ImportedKernel, KernelError> {
    let modules_dir = modules_rel.map(|rel| staging.path().join(rel));
    let derived = derive(staging.path(), format, modules_dir.as_deref())?;
    let kernel_name = match format {
        KernelFormat::BzImage => BZIMAGE,
        KernelFormat::Elf => VMLINUX,
    };
    let at = |name: &str| staging.final_path(Path::new(name));
    Ok(ImportedKernel {
        kernel_path: at(kernel_name),
        vmlinux_path: derived.has_vmlinux.then(|| at(VMLINUX)),
        vmlinux_error: derived.vmlinux_error,
        config_path: derived.has_config.then(|| at(CONFIG)),
        support: derived.support,
        initrd_path: initrd_rel.map(|rel| staging.final_path(rel)),
        modules_path: modules_rel.map(|rel| staging.final_path(rel)),
        release,
        format,
    })
}
