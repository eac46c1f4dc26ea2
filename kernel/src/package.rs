//! Which package of a lock's kernel group is the kernel.
//!
//! A profile names its kernel by a package such as `linux-image-amd64`, a
//! meta-package whose only job is to depend on the current
//! `linux-image-<version>-amd64`, which holds the image and the modules. The
//! lock's kernel group holds the closure of that name, so both; the kernel
//! is the package whose name is `linux-image-` followed by a digit.

use components::LockedPackage;

/// Whether `name` is a kernel image package: `linux-image-` followed by a
/// digit (`linux-image-6.1.0-9-amd64`; not `linux-image-amd64`).
pub fn is_image_package(name: &str) -> bool {
    name.strip_prefix("linux-image-")
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// The kernel image package of a lock's kernel group (as
/// [`components::Lock::group_packages`] gives it): the first package, in
/// the group's order, whose name [`is_image_package`]; `None` if there is
/// none.
pub fn image_package<'a>(
    group: impl IntoIterator<Item = &'a LockedPackage>,
) -> Option<&'a LockedPackage> {
    group
        .into_iter()
        .find(|p| is_image_package(p.name.as_str()))
}

#[cfg(test)]
mod tests {
    use components::{LockedPackage, PackageName, Sha256Digest, Version};

    use super::*;

    fn pkg(name: &str) -> LockedPackage {
        LockedPackage {
            name: PackageName::new(name).unwrap(),
            version: Version::new("6.1.0-9").unwrap(),
            architecture: "amd64".into(),
            size: 1,
            sha256: Sha256Digest([0; 32]),
            filename: format!("pool/main/l/linux-signed-amd64/{name}_6.1.0-9_amd64.deb"),
        }
    }

    #[test]
    fn the_versioned_package_not_the_meta_package() {
        let group = [
            pkg("linux-base"),
            pkg("linux-image-6.1.0-9-amd64"),
            pkg("linux-image-amd64"),
        ];
        assert_eq!(
            image_package(&group).map(|p| p.name.as_str()),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(image_package(&group[2..]), None);
        assert_eq!(image_package([]), None);
    }

    #[test]
    fn names() {
        assert!(is_image_package("linux-image-6.1.0-9-amd64"));
        assert!(is_image_package("linux-image-6.1.0-9-cloud-amd64"));
        for name in [
            "linux-image-amd64",
            "linux-image-cloud-amd64",
            "linux-image-",
            "linux-headers-6.1.0-9-amd64",
            "linux-image6.1",
        ] {
            assert!(!is_image_package(name), "{name}");
        }
    }
}
