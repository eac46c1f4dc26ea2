//! The kernel part of an image: which kernel package, which driver modules
//! and their dependency closure.
//!
//! What it answers now, for the one kernel of the `compartment` runtime:
//!
//! - [`package`]: which package of a lock's kernel group holds the kernel
//!   ([`image_package`]: `linux-image-<version>…`, not the
//!   `linux-image-amd64` meta-package that depends on it);
//! - [`tree`]: what that package holds ([`KernelTree`]): the kernel version
//!   and image, the loadable modules with their dependencies, read from each
//!   module's `.modinfo` because Debian ships no `modules.dep`, and the
//!   built-ins. [`KernelTree::resolve`] turns the profile's driver names
//!   (normalised, `-` → `_`) into a deterministic load order, dependencies
//!   first; the module files come back decompressed, for the initramfs.
//!
//! What it is the home for next: the kernels of the `microvm` runtime (the
//! host kernel, whose KVM, VFIO and IOMMU code is inside the TCB, and each
//! personality's guest kernel), and the kernel figures of the TCB report
//! (what surface the kernel exposes: its size, built-ins and loaded modules).
//!
//! Reading packages (`.deb`, the lock's records) is the `components` crate's
//! business; this crate interprets a kernel package on top of it. Nothing
//! here reads the clock, and nothing panics on malformed packages or ELF
//! files: every failure is an [`Error`].

#![forbid(unsafe_code)]

pub mod package;
pub mod tree;

pub use package::{image_package, is_image_package};
pub use tree::{
    elf_section, modinfo_fields, KernelTree, ModuleFile, ModuleInfo, ModuleName, Resolution,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel package lacks something we need.
    #[error("kernel package: {0}")]
    Package(String),
    /// A driver name matches no module and no built-in.
    #[error("unknown driver `{name}` for kernel {kver}: no module or built-in of that name{}", suggest(.suggestions))]
    UnknownDriver {
        /// The requested name.
        name: String,
        /// The kernel version.
        kver: String,
        /// Close names.
        suggestions: Vec<String>,
    },
    /// A module's `.modinfo` cannot be read.
    #[error("module {module}: {message}")]
    ModInfo {
        /// The module file.
        module: String,
        /// What is wrong.
        message: String,
    },
    /// The package itself cannot be read (a malformed `.deb`, say).
    #[error(transparent)]
    Components(#[from] components::Error),
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
