//! Handing a NIC to a personality's VM through VFIO (the `microvm` runtime):
//! the checks that must hold before the card leaves the host, and its
//! binding to `vfio-pci`.
//!
//! Refused, each by name, before anything is written:
//! - the PCI function is not there;
//! - it has no IOMMU group: no IOMMU, or the IOMMU is off; the card's DMA
//!   would reach all of memory;
//! - its group holds anything else: the other devices would go to the VM
//!   with it, or stay on the host within reach of the VM's DMA (functions of
//!   one group are not isolated from each other);
//! - interrupt remapping is off: the card could forge interrupts into the
//!   host (KVM refuses device assignment without it unless forced);
//! - VFIO was told to allow interrupts without remapping
//!   (`vfio_iommu_type1.allow_unsafe_interrupts=1`): the init never forces
//!   it, and refuses a kernel where someone did.
//!
//! Interrupt remapping is read off the interrupt chips the kernel set up:
//! with it on, MSI and IO-APIC interrupts go through chips whose names start
//! with `IR-` (`/sys/kernel/irq/*/chip_name`: `IR-PCI-MSI…`, `IR-IO-APIC`),
//! for Intel VT-d and AMD-Vi alike.
//!
//! Everything takes the sysfs root as a parameter (tests use a tree of
//! their own). Nothing here panics on odd sysfs contents.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a NIC cannot be passed through.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VfioError {
    /// No such PCI function.
    #[error("NIC {bdf}: no PCI function {bdf} on this machine")]
    NotFound {
        /// The PCI address.
        bdf: String,
    },
    /// No IOMMU group.
    #[error("NIC {bdf}: not in an IOMMU group (no IOMMU, or it is off: add intel_iommu=on or enable AMD-Vi); its DMA would reach all memory, so it is not passed through")]
    NoIommu {
        /// The PCI address.
        bdf: String,
    },
    /// The group holds other devices.
    #[error("NIC {bdf}: its IOMMU group {group} also holds {others}; a VM can only own a group alone (put the card in a slot behind ACS, or use another card)")]
    SharedGroup {
        /// The PCI address.
        bdf: String,
        /// The group number.
        group: u32,
        /// The other devices, comma-separated.
        others: String,
    },
    /// Interrupt remapping is off.
    #[error("NIC {bdf}: interrupt remapping is off (no IR- interrupt chip); without it the card could inject interrupts into the host, so it is not passed through")]
    NoInterruptRemapping {
        /// The PCI address.
        bdf: String,
    },
    /// VFIO allows interrupts without remapping.
    #[error("vfio_iommu_type1.allow_unsafe_interrupts is on: VFIO would assign devices without interrupt remapping; refusing every passthrough")]
    UnsafeInterrupts,
    /// Binding to `vfio-pci` did not take.
    #[error("NIC {bdf}: still bound to {driver} after asking for vfio-pci (is the vfio-pci module loaded?)")]
    NotBound {
        /// The PCI address.
        bdf: String,
        /// The driver it has (or `no driver`).
        driver: String,
    },
    /// A sysfs write failed.
    #[error("NIC {bdf}: writing {path}: {reason}")]
    Write {
        /// The PCI address.
        bdf: String,
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
}

/// A checked IOMMU group: the device node the VMM gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioGroup {
    /// The PCI address.
    pub bdf: String,
    /// The group number.
    pub group: u32,
}

impl VfioGroup {
    /// `/dev/vfio/<group>`.
    pub fn dev_path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/vfio/{}", self.group))
    }
}

fn device_dir(sys: &Path, bdf: &str) -> PathBuf {
    sys.join("bus/pci/devices").join(bdf)
}

/// The name of the last component a symlink points to.
fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Whether any interrupt chip is a remapping one.
pub fn interrupt_remapping(sys: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir(sys.join("kernel/irq")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("chip_name"))
            .map(|n| n.trim_start().starts_with("IR-"))
            .unwrap_or(false)
    })
}

/// Checks that `bdf` (`0000:03:00.0`) can be passed through: present, alone
/// in its IOMMU group, interrupt remapping on, interrupts without remapping refused by VFIO.
pub fn check_passthrough(sys: &Path, bdf: &str) -> Result<VfioGroup, VfioError> {
    let b = || bdf.to_owned();
    let dev = device_dir(sys, bdf);
    if !dev.exists() {
        return Err(VfioError::NotFound { bdf: b() });
    }
    let group = link_name(&dev.join("iommu_group"))
        .and_then(|g| g.parse::<u32>().ok())
        .ok_or(VfioError::NoIommu { bdf: b() })?;
    let members = sys.join(format!("kernel/iommu_groups/{group}/devices"));
    let mut others: Vec<String> = std::fs::read_dir(&members)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != bdf)
                .collect()
        })
        .unwrap_or_default();
    if !others.is_empty() {
        others.sort();
        return Err(VfioError::SharedGroup {
            bdf: b(),
            group,
            others: others.join(", "),
        });
    }
    let unsafe_irqs = std::fs::read_to_string(
        sys.join("module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"),
    )
    .map(|v| matches!(v.trim(), "Y" | "y" | "1"))
    .unwrap_or(false);
    if unsafe_irqs {
        return Err(VfioError::UnsafeInterrupts);
    }
    if !interrupt_remapping(sys) {
        return Err(VfioError::NoInterruptRemapping { bdf: b() });
    }
    Ok(VfioGroup { bdf: b(), group })
}

/// The driver `bdf` is bound to, if any.
pub fn driver(sys: &Path, bdf: &str) -> Option<String> {
    link_name(&device_dir(sys, bdf).join("driver"))
}

/// Checks `bdf`, then binds it to `vfio-pci`: unbinds its current driver,
/// sets `driver_override` and asks the PCI core to probe; waits up to
/// `wait` for the binding. The card is never touched when a check fails.
pub fn bind(sys: &Path, bdf: &str, wait: Duration) -> Result<VfioGroup, VfioError> {
    let g = check_passthrough(sys, bdf)?;
    let dev = device_dir(sys, bdf);
    let write = |path: PathBuf, value: &str| {
        std::fs::write(&path, value).map_err(|e| VfioError::Write {
            bdf: bdf.to_owned(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    match driver(sys, bdf).as_deref() {
        Some("vfio-pci") => return Ok(g),
        Some(_) => write(dev.join("driver/unbind"), bdf)?,
        None => {}
    }
    write(dev.join("driver_override"), "vfio-pci")?;
    write(sys.join("bus/pci/drivers_probe"), bdf)?;
    let t0 = Instant::now();
    loop {
        let d = driver(sys, bdf);
        if d.as_deref() == Some("vfio-pci") {
            return Ok(g);
        }
        if t0.elapsed() >= wait {
            return Err(VfioError::NotBound {
                bdf: bdf.to_owned(),
                driver: d.unwrap_or_else(|| "no driver".into()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const NIC: &str = "0000:03:00.0";

    /// A sysfs tree: `NIC` in group 7 (with `group_also`), an IR chip when
    /// `ir`, and `driver` bound.
    fn tree(group_also: &[&str], ir: bool, driver: Option<&str>) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let dev = s.join("bus/pci/devices").join(NIC);
        std::fs::create_dir_all(&dev).unwrap();
        let members = s.join("kernel/iommu_groups/7/devices");
        std::fs::create_dir_all(&members).unwrap();
        symlink(s.join("kernel/iommu_groups/7"), dev.join("iommu_group")).unwrap();
        for d in std::iter::once(&NIC).chain(group_also) {
            symlink(s.join("bus/pci/devices").join(d), members.join(d)).unwrap();
        }
        for (irq, name) in [(1, "IR-IO-APIC"), (24, "PCI-MSI-0000:00:02.0")] {
            let d = s.join(format!("kernel/irq/{irq}"));
            std::fs::create_dir_all(&d).unwrap();
            let name = if ir {
                name.to_owned()
            } else {
                name.trim_start_matches("IR-").to_owned()
            };
            std::fs::write(d.join("chip_name"), name + "\n").unwrap();
        }
        if let Some(drv) = driver {
            let dd = s.join("bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&dd).unwrap();
            std::fs::write(dd.join("unbind"), "").unwrap();
            symlink(&dd, dev.join("driver")).unwrap();
        }
        std::fs::write(dev.join("driver_override"), "(null)\n").unwrap();
        std::fs::write(s.join("bus/pci/drivers_probe"), "").unwrap();
        t
    }

    #[test]
    fn a_card_alone_in_its_group_with_remapping_passes() {
        let t = tree(&[], true, None);
        let g = check_passthrough(t.path(), NIC).unwrap();
        assert_eq!(g.group, 7);
        assert_eq!(g.dev_path(), Path::new("/dev/vfio/7"));
    }

    #[test]
    fn each_unsafe_setting_is_refused_by_name() {
        let t = tree(&["0000:03:00.1", "0000:00:1c.0"], true, None);
        let e = check_passthrough(t.path(), NIC).unwrap_err();
        assert_eq!(
            e,
            VfioError::SharedGroup {
                bdf: NIC.into(),
                group: 7,
                others: "0000:00:1c.0, 0000:03:00.1".into()
            }
        );
        assert!(e
            .to_string()
            .contains("also holds 0000:00:1c.0, 0000:03:00.1"));

        let t = tree(&[], false, None);
        let e = check_passthrough(t.path(), NIC).unwrap_err();
        assert_eq!(e, VfioError::NoInterruptRemapping { bdf: NIC.into() });

        let t = tree(&[], true, None);
        std::fs::remove_file(
            t.path()
                .join("bus/pci/devices")
                .join(NIC)
                .join("iommu_group"),
        )
        .unwrap();
        assert_eq!(
            check_passthrough(t.path(), NIC).unwrap_err(),
            VfioError::NoIommu { bdf: NIC.into() }
        );

        let t = tree(&[], true, None);
        let p = t.path().join("module/vfio_iommu_type1/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("allow_unsafe_interrupts"), "Y\n").unwrap();
        assert_eq!(
            check_passthrough(t.path(), NIC).unwrap_err(),
            VfioError::UnsafeInterrupts
        );
        std::fs::write(p.join("allow_unsafe_interrupts"), "N\n").unwrap();
        assert!(check_passthrough(t.path(), NIC).is_ok());

        assert_eq!(
            check_passthrough(t.path(), "0000:09:00.0").unwrap_err(),
            VfioError::NotFound {
                bdf: "0000:09:00.0".into()
            }
        );
    }

    /// The machine's own sysfs: every PCI function gets a named answer; on
    /// a machine without an IOMMU (this development host and CI), each is
    /// refused as having no IOMMU group.
    #[test]
    fn the_real_sysfs_gives_each_device_a_named_answer() {
        let sys = Path::new("/sys");
        let Ok(devs) = std::fs::read_dir(sys.join("bus/pci/devices")) else {
            eprintln!("no /sys/bus/pci: nothing to check");
            return;
        };
        let iommu = std::fs::read_dir(sys.join("kernel/iommu_groups"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        for d in devs.flatten() {
            let bdf = d.file_name().to_string_lossy().into_owned();
            let r = check_passthrough(sys, &bdf);
            if !iommu {
                assert_eq!(r, Err(VfioError::NoIommu { bdf: bdf.clone() }), "{bdf}");
            }
            if let Err(e) = r {
                assert!(e.to_string().contains(&bdf) || e == VfioError::UnsafeInterrupts);
            }
        }
    }

    #[test]
    fn binding_unbinds_overrides_and_probes_but_never_touches_a_refused_card() {
        // Refused: nothing written.
        let t = tree(&["0000:03:00.1"], true, Some("e1000e"));
        let s = t.path();
        assert!(bind(s, NIC, Duration::ZERO).is_err());
        let dev = s.join("bus/pci/devices").join(NIC);
        assert_eq!(
            std::fs::read_to_string(dev.join("driver_override")).unwrap(),
            "(null)\n"
        );
        assert_eq!(
            std::fs::read_to_string(s.join("bus/pci/drivers/e1000e/unbind")).unwrap(),
            ""
        );

        // Accepted: unbind, override, probe; a kernel that does not bind it
        // (no vfio-pci module) is reported with the driver it kept.
        let t = tree(&[], true, Some("e1000e"));
        let s = t.path();
        let e = bind(s, NIC, Duration::from_millis(50)).unwrap_err();
        assert_eq!(
            e,
            VfioError::NotBound {
                bdf: NIC.into(),
                driver: "e1000e".into()
            }
        );
        let dev = s.join("bus/pci/devices").join(NIC);
        assert_eq!(
            std::fs::read_to_string(s.join("bus/pci/drivers/e1000e/unbind")).unwrap(),
            NIC
        );
        assert_eq!(
            std::fs::read_to_string(dev.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            std::fs::read_to_string(s.join("bus/pci/drivers_probe")).unwrap(),
            NIC
        );

        // Already bound to vfio-pci: nothing to do.
        let t = tree(&[], true, Some("vfio-pci"));
        assert_eq!(bind(t.path(), NIC, Duration::ZERO).unwrap().group, 7);
    }
}
