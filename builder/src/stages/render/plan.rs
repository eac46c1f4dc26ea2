//! The runtime plan (the `gateway-plan` format) for a profile: the
//! compartments, their NICs, services and socket families, the manual keys'
//! records, the IKE process and the device credentials it is handed. Every
//! value is checked as the init will check it, and the encoded plan is
//! decoded again before the image is built: a plan the init would refuse
//! stops the build, naming the profile field.

use profiles::{Profile, Side};

use super::{at, personality, uid_base, DHCP_SERVICE, NETWORK_SETUP, UDHCPC_SCRIPT};
use crate::stages::parts::{
    GUEST_INITRD_PATH, GUEST_KERNEL_PATH, IKE_PATH, QEMU_PATH, VIADUCT_PATH,
};
use crate::BuildError;

/// The key-use records of the policy's manual keys, for the plan's `manual-key`
/// lines: the init records them in the TPM before the Viaduct installs the keys, and
/// never lets them be installed twice (the init's `keyledger`).
pub(crate) fn manual_key_uses(policy: &policy_blob::Policy) -> Vec<gateway_plan::keyuse::KeyUse> {
    policy
        .manual_key_uses()
        .as_slice()
        .iter()
        .map(|u| gateway_plan::keyuse::KeyUse(u.0))
        .collect()
}

/// For a policy that keys tunnels by IKE: the names of the device credentials
/// (`tpm:<name>`) its IKE process needs, ascending, once each (the plan's
/// `ike-credential` lines; the init hands them over). `None` without IKE.
pub(crate) fn ike_credentials(policy: &policy_blob::Policy) -> Option<Vec<String>> {
    use policy_blob::{Credential, IkeAuth};
    let ike = policy.ike.as_ref()?;
    let mut names: Vec<String> = ike
        .private_key
        .iter()
        .chain(ike.peers.iter().filter_map(|p| match &p.auth {
            IkeAuth::Psk(c) => Some(c),
            IkeAuth::Ed25519 { .. } | IkeAuth::EcdsaP256 { .. } => None,
        }))
        .filter_map(|c| match c {
            Credential::Device(name) => Some(name.clone()),
            Credential::Lab(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// The runtime plan (see `gateway_plan`) for the profile.
pub(crate) fn make_plan(
    profile: &Profile,
    policy_digest: &[u8; 32],
    manual_keys: &[gateway_plan::keyuse::KeyUse],
    ike_credentials: Option<&[String]>,
    modules: &[String],
    release_key: Option<[u8; 32]>,
    learns_routes: bool,
) -> Result<gateway_plan::Plan, BuildError> {
    use gateway_plan::*;
    let e = |e: gateway_plan::Error| BuildError::Plan(e.to_string());
    let plan = Plan {
        profile_name: ProfileName::new(&profile.appliance.name).map_err(at("appliance.name"))?,
        profile_version: ProfileVersion::new(&profile.appliance.version)
            .map_err(at("appliance.version"))?,
        security_version: SecurityVersion(
            u32::try_from(profile.appliance.security_version).map_err(|_| {
                BuildError::Plan(format!(
                    "appliance.security_version: {} is larger than the gateway supports (2^32-1)",
                    profile.appliance.security_version
                ))
            })?,
        ),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").map_err(e)?,
        policy_sha256: gateway_plan::digest::Sha256Digest(*policy_digest),
        manual_keys: manual_keys.to_vec(),
        modules: modules
            .iter()
            .map(|m| ModulePath::new(m))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        compartments: [profiles::Side::Red, profiles::Side::Black]
            .into_iter()
            .map(|side| compartment_plan(profile, side))
            .collect::<Result<_, _>>()?,
        viaduct: InitramfsPath::new(VIADUCT_PATH).map_err(e)?,
        ike: match ike_credentials {
            None => None,
            Some(names) => Some(IkePlan {
                binary: InitramfsPath::new(IKE_PATH).map_err(e)?,
                credentials: names
                    .iter()
                    .map(|n| CredentialName::new(n))
                    .collect::<Result<_, _>>()
                    .map_err(e)?,
            }),
        },
        boot_assessment: boot_assessment(profile),
        // Updates go to the inactive slot of an A/B image, signed by the
        // release key.
        update: match (boot_assessment(profile), release_key) {
            (Some(_), Some(release_key)) => Some(UpdatePlan {
                port: update_bundle::wire::DEFAULT_PORT,
                tries: profile.image.boot_tries,
                release_key,
            }),
            _ => None,
        },
        // Black's routing daemon hands its table to the Viaduct on FRR's
        // default FPM port, on black's loopback.
        fpm: learns_routes.then_some(FpmPlan {
            port: FpmPlan::DEFAULT_PORT,
        }),
    };
    // The init refuses a plan it cannot decode and stays closed: find out here.
    match Plan::decode(&plan.encode()) {
        Ok(decoded) if decoded == plan => Ok(plan),
        Ok(_) => Err(BuildError::Plan(
            "the encoded plan decodes to a different plan (a builder bug)".into(),
        )),
        Err(err) => Err(BuildError::Plan(format!(
            "the gateway init would refuse this plan: {err}"
        ))),
    }
}

/// One personality's compartment in the runtime plan.
pub(crate) fn compartment_plan(
    profile: &Profile,
    side: Side,
) -> Result<gateway_plan::CompartmentPlan, BuildError> {
    use gateway_plan::*;
    let p = personality(profile, side);
    let t = format!("personalities.{}", side.name());
    let hw = profile
        .hardware
        .nics
        .iter()
        .find(|n| n.role == p.nic)
        .ok_or_else(|| {
            BuildError::Plan(format!(
                "{t}.nic: no NIC with role `{}` in [hardware.nics]",
                p.nic
            ))
        })?;
    let h = format!("hardware.nics.{}", hw.role);
    let pci = hw.pci.as_deref().map(str::to_ascii_lowercase);
    if let Some(pci) = &pci {
        check_pci(pci).map_err(at(format!("{h}.pci")))?;
    }
    let mac = hw.mac.as_deref().map(str::to_ascii_lowercase);
    if let Some(mac) = &mac {
        check_mac(mac).map_err(at(format!("{h}.mac")))?;
    }
    gateway_plan::check_ifname("match-driver", &hw.driver).map_err(at(format!("{h}.driver")))?;
    let mut services = Vec::new();
    for (i, s) in p.services.iter().enumerate() {
        let st = format!("{t}.services[{i}]");
        if p.dhcp && s.name == DHCP_SERVICE {
            return Err(BuildError::Plan(format!(
                "{st}.name: `{DHCP_SERVICE}` is the DHCP client's service name (dhcp = true); rename this service"
            )));
        }
        services.push(service_plan(&st, s)?);
    }
    if p.dhcp {
        services.push(ServicePlan {
            name: ShortName::new("service", DHCP_SERVICE).map_err(at(format!("{t}.dhcp")))?,
            restart: Restart::Always,
            caps: ["CAP_NET_ADMIN", "CAP_NET_RAW"]
                .into_iter()
                .map(Capability::from_name)
                .collect::<Result<_, _>>()
                .map_err(at(format!("{t}.dhcp")))?,
            argv: [
                "/bin/busybox",
                "udhcpc",
                "-f",
                "-i",
                p.nic.as_str(),
                "-s",
                UDHCPC_SCRIPT,
            ]
            .map(String::from)
            .to_vec(),
        });
    }
    if services.len() > MAX_SERVICES {
        return Err(BuildError::Plan(format!(
            "{t}.services: {} services (with the DHCP client, if any); a compartment runs at most {MAX_SERVICES}",
            services.len()
        )));
    }
    Ok(CompartmentPlan {
        side: match side {
            profiles::Side::Red => gateway_plan::Side::Red,
            profiles::Side::Black => gateway_plan::Side::Black,
        },
        root: InitramfsPath::new(&format!("/personalities/{}", side.name()))
            .map_err(at(t.clone()))?,
        uid_base: uid_base(side),
        memory_max: p.memory_limit.0,
        pids_max: u32::try_from(p.pids_limit).map_err(|_| {
            BuildError::Plan(format!(
                "{t}.pids_limit: {} is larger than the gateway supports (2^32-1)",
                p.pids_limit
            ))
        })?,
        nic: ShortName::new("nic", &p.nic).map_err(at(format!("{t}.nic")))?,
        nic_match: NicMatch {
            pci,
            mac,
            driver: Some(hw.driver.clone()),
            name: None,
        },
        setup: InitramfsPath::new(NETWORK_SETUP).map_err(at(format!("{t} (network setup)")))?,
        // The only socket families its processes may open (the init's seccomp filter
        // refuses the others): what iproute2, busybox and dnsmasq use, and AF_PACKET
        // only for the DHCP client, which talks before it has an address.
        socket_families: [
            SocketFamily::Unix,
            SocketFamily::Inet,
            SocketFamily::Inet6,
            SocketFamily::Netlink,
        ]
        .into_iter()
        .chain(p.dhcp.then_some(SocketFamily::Packet))
        .collect(),
        services,
        vm: vm_plan(profile, hw, p, &t)?,
    })
}

/// Runtime `microvm`: the personality's VM — KVM, QEMU and the guest in the
/// VMM's root at the compartment's `root` (see the parts stage), the
/// guest's memory the personality's limit less what the VMM needs, the card
/// passed through by VFIO unless the profile asks for macvtap.
fn vm_plan(
    profile: &Profile,
    hw: &profiles::Nic,
    p: &profiles::Personality,
    t: &str,
) -> Result<Option<gateway_plan::VmPlan>, BuildError> {
    use gateway_plan::*;
    if profile.appliance.runtime != profiles::Runtime::Microvm {
        return Ok(None);
    }
    let e = |e: gateway_plan::Error| BuildError::Plan(e.to_string());
    let mib = (p.memory_limit.0 >> 20).saturating_sub(VM_OVERHEAD_MIB);
    let memory_mib = u32::try_from(mib)
        .ok()
        .filter(|m| (VmPlan::MIN_MEMORY_MIB..=VmPlan::MAX_MEMORY_MIB).contains(m))
        .ok_or_else(|| {
            BuildError::Plan(format!(
                "{t}.memory_limit: leaves {mib} MiB for the VM's guest after the VMM's {VM_OVERHEAD_MIB} MiB; a guest takes {}..={} MiB",
                VmPlan::MIN_MEMORY_MIB,
                VmPlan::MAX_MEMORY_MIB
            ))
        })?;
    Ok(Some(VmPlan {
        accel: VmAccel::Kvm,
        qemu: InitramfsPath::new(QEMU_PATH).map_err(e)?,
        kernel: InitramfsPath::new(GUEST_KERNEL_PATH).map_err(e)?,
        initrd: InitramfsPath::new(GUEST_INITRD_PATH).map_err(e)?,
        memory_mib,
        nic: match hw.attach {
            profiles::NicAttach::Vfio => VmNic::Vfio,
            profiles::NicAttach::Macvtap => VmNic::Macvtap,
        },
    }))
}

/// One service of a personality; `st` is its profile path (`personalities.red.services[0]`).
pub(crate) fn service_plan(
    st: &str,
    s: &profiles::Service,
) -> Result<gateway_plan::ServicePlan, BuildError> {
    use gateway_plan::*;
    let mut caps = Vec::new();
    for (j, c) in s.capabilities.iter().enumerate() {
        caps.push(Capability::from_name(c).map_err(at(format!("{st}.capabilities[{j}]")))?);
    }
    caps.sort();
    caps.dedup();
    if s.command.len() > MAX_ARGS {
        return Err(BuildError::Plan(format!(
            "{st}.command: {} words; a service takes at most {MAX_ARGS}",
            s.command.len()
        )));
    }
    for (k, w) in s.command.iter().enumerate() {
        gateway_plan::check_arg(w).map_err(at(format!("{st}.command[{k}]")))?;
    }
    match s.command.first() {
        Some(prog) if prog.starts_with('/') => {}
        _ => {
            return Err(BuildError::Plan(format!(
                "{st}.command[0]: the program must be an absolute path"
            )))
        }
    }
    Ok(ServicePlan {
        name: ShortName::new("service", &s.name).map_err(at(format!("{st}.name")))?,
        restart: match s.restart {
            profiles::Restart::Always => Restart::Always,
            profiles::Restart::OnFailure => Restart::OnFailure,
            profiles::Restart::Never => Restart::Never,
        },
        caps,
        argv: s.command.clone(),
    })
}

/// An A/B image's boot is judged: good within the profile's time once ready
/// and, with `good_when = "tunnels-up"`, once every tunnel of the policy
/// carries SAs. A single-slot image has nothing to fall back to: not judged.
fn boot_assessment(profile: &Profile) -> Option<gateway_plan::BootAssessment> {
    let i = &profile.image;
    (i.slots == profiles::Slots::Ab).then(|| gateway_plan::BootAssessment {
        timeout_s: i.boot_timeout_s,
        tunnels: match i.good_when {
            profiles::model::GoodWhen::Ready => 0,
            profiles::model::GoodWhen::TunnelsUp => profile
                .viaduct
                .ipsec
                .as_ref()
                .map_or(0, |x| x.peers.iter().map(|p| p.tunnels.len() as u32).sum()),
        },
    })
}
