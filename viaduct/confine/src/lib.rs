//! Self-confinement of the Viaduct's processes (the data plane `viaduct` and
//! the IKE process `viaduct-ike`), applied once their inherited descriptors
//! are adopted and their policy is read, before they start work (threads
//! started later inherit every restriction):
//!
//! 1. capability bounding set emptied (while CAP_SETPCAP is still held);
//! 2. `no_new_privs` set;
//! 3. Landlock ruleset handling every filesystem and TCP access with no rule,
//!    i.e. no filesystem access at all (best effort: older kernels without
//!    Landlock still get 5.);
//! 4. effective, permitted, inheritable and ambient capabilities cleared;
//! 5. seccomp filter from the caller's allowlist: every other system call
//!    kills the process, and so does every x32 or i386 call.
//!
//! Each allowlist is data, one entry per system call with the reason it is
//! needed, kept next to the binary it confines. Confinement failing is an
//! error: neither process runs unconfined when asked to confine.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use caps::CapSet;
use landlock::{Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, ABI};
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

/// An allowlist: (system call number, why it is needed).
pub type Allowlist = [(i64, &'static str)];

/// A confinement step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct ConfineError {
    /// The step.
    pub step: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// What confinement achieved (Landlock depends on the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// Landlock fully or partially enforced.
    pub landlock: bool,
}

fn err(step: &'static str, detail: impl ToString) -> ConfineError {
    ConfineError {
        step,
        detail: detail.to_string(),
    }
}

/// Builds the seccomp BPF program of `allowlist` for this architecture
/// (also used by tests to check it).
///
/// # Errors
/// The list does not compile (unknown architecture, bad numbers).
pub fn seccomp_program(allowlist: &Allowlist) -> Result<seccompiler::BpfProgram, ConfineError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowlist.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err("seccomp", e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| err("seccomp", e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err("seccomp", e))
}

/// Confines the calling thread (and the threads it spawns afterwards) to
/// `allowlist`.
///
/// # Errors
/// The step that failed; the process must not go on then.
pub fn confine(allowlist: &Allowlist) -> Result<Confinement, ConfineError> {
    let program = seccomp_program(allowlist)?;
    // 1. Bounding set, while we may still hold CAP_SETPCAP.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err("capability bounding set", e))?;
        }
    }
    // 2. no_new_privs.
    rustix::thread::set_no_new_privs(true).map_err(|e| err("no_new_privs", e))?;
    // 3. Landlock: handle everything, allow nothing.
    let abi = ABI::V5;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| err("landlock", e))?;
    let landlock = status.ruleset != RulesetStatus::NotEnforced;
    // 4. Capabilities.
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| err("capabilities", e))?;
    }
    // 5. Seccomp last: it forbids what the steps above needed.
    seccompiler::apply_filter(&program).map_err(|e| err("seccomp", e))?;
    Ok(Confinement { landlock })
}

/// Checks an allowlist's compiled program the way a test should: each
/// entry has a reason and appears once, none of `forbidden` is allowed, and
/// running the program (a classic-BPF interpreter, not the table) allows
/// every listed call and kills every other call number below 600, every
/// x32 call and every i386 call.
///
/// # Panics
/// On the first violation, naming it (for tests).
pub fn check_allowlist(allowlist: &Allowlist, forbidden: &[i64]) {
    let prog = seccomp_program(allowlist).expect("the allowlist compiles");
    assert!(!prog.is_empty());
    let mut seen = std::collections::HashSet::new();
    for (n, why) in allowlist {
        assert!(seen.insert(*n), "syscall {n} listed twice");
        assert!(!why.is_empty(), "syscall {n} without a reason");
    }
    for nr in forbidden {
        assert!(
            allowlist.iter().all(|(n, _)| n != nr),
            "syscall {nr} allowed"
        );
    }
    #[cfg(target_arch = "x86_64")]
    bpf::check_program(&prog, allowlist);
}

#[cfg(target_arch = "x86_64")]
mod bpf {
    use super::Allowlist;

    /// A minimal interpreter for the classic-BPF subset `seccompiler` emits, so the
    /// program itself is checked, not the table it was built from.
    fn run(prog: &[seccompiler::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let load = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                8 | 12 => 0,
                16..=63 => {
                    let a = args[((off - 16) / 8) as usize];
                    if off % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                _ => panic!("load outside seccomp_data at {off}"),
            }
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = prog.get(pc).expect("program runs off its end");
            match i.code {
                0x20 => acc = load(i.k),
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                c => panic!("unexpected BPF instruction {c:#x}"),
            }
            pc += 1;
        }
    }

    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const ALLOW: u32 = 0x7fff_0000;

    /// The review's x32 finding, for the Viaduct's own filter: an allowlist whose
    /// default is "kill" never matches an x32 number (bit 30 set) nor an i386 call, so
    /// neither ABI reaches a call the list does not name.
    pub(super) fn check_program(prog: &[seccompiler::sock_filter], allowlist: &Allowlist) {
        for (nr, why) in allowlist {
            let nr = *nr as u32;
            assert_eq!(run(prog, nr, AUDIT_ARCH_X86_64, [0; 6]), ALLOW, "{why}");
            assert_eq!(
                run(prog, nr | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]),
                KILL_PROCESS,
                "x32 {nr}"
            );
            assert_eq!(
                run(prog, nr, AUDIT_ARCH_I386, [0; 6]),
                KILL_PROCESS,
                "i386 {nr}"
            );
        }
        // x32's own numbers (512..=547, and every call OR-ed with bit 30), the i386
        // socketcall, and calls the list does not name.
        for nr in (0..600u32).chain([X32_SYSCALL_BIT | 512, X32_SYSCALL_BIT | 547, u32::MAX]) {
            if allowlist.iter().any(|(n, _)| *n as u32 == nr) {
                continue;
            }
            assert_eq!(
                run(prog, nr, AUDIT_ARCH_X86_64, [0; 6]),
                KILL_PROCESS,
                "{nr}"
            );
        }
        assert_eq!(run(prog, 102, AUDIT_ARCH_I386, [0; 6]), KILL_PROCESS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_allowlist_is_checked_and_a_bad_one_is_caught() {
        let list: &Allowlist = &[
            (libc::SYS_read, "read"),
            (libc::SYS_write, "write"),
            (libc::SYS_exit_group, "exit"),
        ];
        check_allowlist(list, &[libc::SYS_openat]);
        let open = std::panic::catch_unwind(|| {
            check_allowlist(&[(libc::SYS_openat, "oops")], &[libc::SYS_openat])
        });
        assert!(open.is_err(), "a forbidden call must be caught");
        let twice = std::panic::catch_unwind(|| {
            check_allowlist(&[(libc::SYS_read, "a"), (libc::SYS_read, "b")], &[])
        });
        assert!(twice.is_err(), "a duplicate must be caught");
    }
}
