//! `appliance.runtime`: what the `microvm` runtime needs of the rest of the
//! profile, and that `attach` is only written where it means something.
//!
//! Under `microvm` each personality is a KVM guest owning its card:
//! - a card passed through (`attach = "vfio"`, the default) is found by its
//!   PCI address: it needs `pci`;
//! - the guest's memory is the personality's `memory_limit` less what its
//!   VMM needs ([`VM_OVERHEAD`]), and a guest needs at least [`MIN_GUEST`].

use std::collections::BTreeMap;
use std::ops::Range;

use crate::model::*;
use crate::raw::*;
use crate::units::ByteSize;

use super::checker::V;

/// What a personality's VMM needs beside its guest's memory (the plan's
/// `VM_OVERHEAD_MIB`).
pub(crate) const VM_OVERHEAD: u64 = 64 << 20;
/// The least memory a personality's guest gets (the plan's
/// `VmPlan::MIN_MEMORY_MIB`).
pub(crate) const MIN_GUEST: u64 = 64 << 20;

/// The checks of the runtime against the NICs and the personalities.
pub(super) fn runtime(
    v: &mut V<'_>,
    runtime: Runtime,
    nics: Option<&Sp<BTreeMap<String, Sp<RawNic>>>>,
    parsed: &[Nic],
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
    memory: [Option<(Side, ByteSize)>; 2],
) {
    if let Some(nics) = nics {
        for (role, raw) in &nics.value {
            let t = format!("hardware.nics.{role}");
            match runtime {
                Runtime::Compartment => {
                    if let Some(a) = &raw.attach {
                        v.err(
                            &a.span,
                            format!("{t}.attach"),
                            "`attach` applies to `runtime = \"microvm\"` only: a compartment's card stays with the gateway's kernel",
                        );
                    }
                }
                Runtime::Microvm => {
                    let Some(nic) = parsed.iter().find(|n| &n.role == role) else {
                        continue;
                    };
                    if nic.attach == NicAttach::Vfio && nic.pci.is_none() {
                        v.err(
                            &raw.span,
                            format!("{t}.pci"),
                            format!(
                                "runtime `microvm` passes card `{role}` through to the {} personality's VM by its PCI address: give `pci` (e.g. `0000:01:00.0`), or `attach = \"macvtap\"` to keep its driver in the gateway's kernel",
                                nic.owner.name()
                            ),
                        );
                    }
                }
            }
        }
    }
    if runtime != Runtime::Microvm {
        return;
    }
    for (side, limit) in memory.into_iter().flatten() {
        if limit.0 >= VM_OVERHEAD + MIN_GUEST {
            continue;
        }
        let t = format!("personalities.{}", side.name());
        let raw = personalities.and_then(|p| p.value.get(side.name()));
        let span: Range<usize> = match raw {
            Some(r) => r
                .memory_limit
                .as_ref()
                .map(|m| m.span.clone())
                .unwrap_or_else(|| r.span.clone()),
            None => continue,
        };
        v.err(
            &span,
            format!("{t}.memory_limit"),
            format!(
                "under runtime `microvm` the limit holds the personality's VM: its VMM ({} MiB) and at least {} MiB of guest memory; give at least {}MiB",
                VM_OVERHEAD >> 20,
                MIN_GUEST >> 20,
                (VM_OVERHEAD + MIN_GUEST) >> 20
            ),
        );
    }
}
