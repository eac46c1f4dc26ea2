//! The lab: two gateways built from the lab profiles, each booted in QEMU (q35, TCG,
//! OVMF, its own swtpm), joined by an emulated internet, each with a LAN host.
//!
//! ```text
//!  netns <tag>-lan-a            netns <tag>-inet                      netns <tag>-lan-b
//!  eth0 10.1.0.2 ── tap ── [gw-a: red│Viaduct│black] ── tap ─┐
//!                                                   br0 198.51.100.254 (tcpdump)
//!  eth0 10.2.0.2 ── tap ── [gw-b: red│Viaduct│black] ── tap ─┘
//! ```
//!
//! Every link is a tap that QEMU opens and the lab then moves into a network
//! namespace of its own: the LAN hosts are namespaces on the host (their `eth0` is the
//! tap of the gateway's LAN card), the internet is a bridge in a third namespace with
//! the address of the black personalities' default gateway. Nothing of the lab is in
//! the host's own network namespace, and nothing leaves it. QEMU and swtpm run
//! detached (so `up` can return); their pid files, sockets and TPM state live in
//! `LAB/run/`, which `down` removes with everything else the lab started. What stays
//! in `LAB/`: the images (`images/`), the serial logs (`gw-a.console.log`), the
//! capture of the internet (`internet.pcap`) and the last test report.
//!
//! Names carry a tag derived from the lab directory (`tb` + 4 hex digits), so two
//! labs in different directories do not collide.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::console::LogConsole;
use crate::host::{self, in_netns, io, ip, Error};
use crate::vm::{self, Console, NicConfig, VmConfig};

/// Copies `profiles/lab/gw-a.toml` and the base it extends from the
/// repository at `repo` into `dest` (same relative layout `base/`, `lab/`,
/// so `extends` resolves); returns the copied profile's path. Tests lock and
/// build the copy, never the committed profile and lock.
pub fn copy_lab_profile(repo: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    let dir = copy_lab_profiles(repo, dest)?;
    Ok(dir.join("gw-a.toml"))
}

/// Copies both lab profiles (`gw-a.toml`, `gw-b.toml`) and their base into `dest`
/// (`dest/lab/`, `dest/base/`), with the shipped profiles a lab variant may
/// extend (`firewall.toml`, `ids.toml`, `router.toml`:
/// `profiles/lab/firewall`, `profiles/lab/router`); returns the directory
/// holding the lab profiles.
pub fn copy_lab_profiles(repo: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dest.join("lab"))?;
    std::fs::create_dir_all(dest.join("base"))?;
    std::fs::copy(
        repo.join("profiles/base/gateway.toml"),
        dest.join("base/gateway.toml"),
    )?;
    for shipped in ["firewall.toml", "ids.toml", "router.toml"] {
        std::fs::copy(repo.join("profiles").join(shipped), dest.join(shipped))?;
    }
    for gw in GATEWAYS {
        std::fs::copy(
            repo.join(format!("profiles/lab/{gw}.toml")),
            dest.join(format!("lab/{gw}.toml")),
        )?;
    }
    Ok(dest.join("lab"))
}

/// The passphrase of the lab's release key (a lab key: it signs lab images only).
pub const LAB_KEY_PASSPHRASE: &str = "appliance testbed lab key";

/// The two gateways of the lab, by profile name.
pub const GATEWAYS: [&str; 2] = ["gw-a", "gw-b"];

/// How to run a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The lab directory (images, logs, capture, run state).
    pub dir: PathBuf,
    /// Directory holding `gw-a.toml` and `gw-b.toml` (with their locks).
    pub profiles: PathBuf,
    /// Package and parts cache of the image builder.
    pub cache_dir: PathBuf,
    /// The static gateway binaries (`gateway-init`, `viaduct`).
    pub bin_dir: PathBuf,
    /// Memory of each gateway VM.
    pub memory_mib: u32,
    /// How long a gateway may take from QEMU start to `appliance: ready`.
    pub ready_timeout: Duration,
    /// Secrets `testbed test` provisions to both gateways after enrolment
    /// (name, file), before it reboots them. Non-empty: the gateways run on
    /// writable copies of their disks (in `LAB/run/`, gone at tear-down), so that
    /// what they seal survives their reboot.
    pub provision: Vec<(String, PathBuf)>,
    /// `testbed test --identity`: after enrolment, each gateway is updated (a
    /// signed A/B update through black) to its profile with `private_key =
    /// "tpm:identity"` and the peer's enrolled identity key pinned; the rest of
    /// the checks run on the tunnel those keys authenticate. Also makes the disks
    /// writable.
    pub identity: bool,
}

impl LabOptions {
    /// Whether the gateways run on writable copies of their disks.
    pub fn writable(&self) -> bool {
        self.identity || !self.provision.is_empty()
    }
}

/// One gateway of the lab and its LAN host, from its profile.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Profile name (`gw-a`).
    pub name: String,
    /// `a` or `b`.
    pub letter: char,
    /// The profile.
    pub profile: PathBuf,
    /// Every file the profile was read from (itself and its bases).
    pub profile_files: Vec<PathBuf>,
    /// Red personality's LAN address and prefix length.
    pub red: (Ipv4Addr, u8),
    /// The LAN host's address (the red address + 1).
    pub host: Ipv4Addr,
    /// Black personality's internet address.
    pub wan: Ipv4Addr,
    /// Prefix length of the internet segment.
    pub wan_len: u8,
    /// Black personality's default gateway (the lab router), if any.
    pub wan_gateway: Option<Ipv4Addr>,
    /// MAC address of the LAN card.
    pub lan_mac: [u8; 6],
    /// MAC address of the internet card.
    pub wan_mac: [u8; 6],
    /// Names of its tunnels, every peer's, in profile order.
    pub tunnels: Vec<String>,
    /// Runtime `microvm`: booted on a machine that passes its cards through
    /// (see [`VmConfig::passthrough`]).
    pub passthrough: bool,
    /// It forwards in clear (role `firewall` or `router`, no tunnel): the lab
    /// router reaches its LAN through its internet address.
    pub clear: bool,
    /// Its Viaduct routes cleartext (role `router`).
    pub router: bool,
    /// Its Viaduct inspects payloads (role `ids`).
    pub ids: bool,
    /// What its Viaduct admits of the routes black's FRR learns
    /// (`[viaduct.learned_routes]`), if anything.
    pub learns: Option<profiles::model::LearnedRoutes>,
}

impl Gateway {
    /// Its LAN's network (the red address's prefix).
    pub fn lan_net(&self) -> (Ipv4Addr, u8) {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.red.1))
            .unwrap_or(0);
        (Ipv4Addr::from(u32::from(self.red.0) & mask), self.red.1)
    }
}

/// Where a `microvm` lab gateway's cards are: each behind a root port of its
/// own, `lan` on bus 1 and `wan` on bus 2.
pub const PASSTHROUGH_PCI: [(&str, &str); 2] = [("lan", "0000:01:00.0"), ("wan", "0000:02:00.0")];

/// The least memory of a `microvm` lab gateway, MiB: its two VMs, their
/// VMMs' roots and the guests' initramfs images beside its own.
pub const PASSTHROUGH_MEMORY_MIB: u32 = 2048;

impl Gateway {
    fn load(profiles: &Path, name: &str, index: u8) -> Result<Gateway, Error> {
        let path = profiles.join(format!("{name}.toml"));
        let p = profiles::load_profile(&path).map_err(|d| Error::State(d.to_string()))?;
        let v4 = |side: &profiles::Personality, what: &str| {
            side.addresses
                .iter()
                .find_map(|a| match a.addr {
                    std::net::IpAddr::V4(v) => Some((v, a.len)),
                    std::net::IpAddr::V6(_) => None,
                })
                .ok_or_else(|| {
                    Error::State(format!(
                        "{}: personalities.{what}.addresses: the lab needs an IPv4 address",
                        path.display()
                    ))
                })
        };
        let red = v4(&p.red, "red")?;
        let (wan, wan_len) = v4(&p.black, "black")?;
        let host = Ipv4Addr::from(u32::from(red.0).wrapping_add(1));
        let wan_gateway = match p.black.gateway {
            Some(std::net::IpAddr::V4(g)) => Some(g),
            _ => None,
        };
        let passthrough = p.appliance.runtime == profiles::Runtime::Microvm;
        if passthrough {
            for (role, pci) in PASSTHROUGH_PCI {
                let at = p.hardware.nics.iter().find(|n| n.role == role);
                if at.and_then(|n| n.pci.as_deref()) != Some(pci) {
                    return Err(Error::State(format!(
                        "{}: hardware.nics.{role}.pci: the lab's microvm machine has card `{role}` at {pci}; the profile says {}",
                        path.display(),
                        at.and_then(|n| n.pci.clone())
                            .unwrap_or_else(|| "nothing".into())
                    )));
                }
            }
        }
        let clear = p.viaduct.ipsec.is_none()
            && p.viaduct.roles.iter().any(|r| {
                matches!(
                    r,
                    profiles::model::Role::Firewall | profiles::model::Role::Router
                )
            });
        let router = p.viaduct.roles.contains(&profiles::model::Role::Router);
        let ids = p.viaduct.roles.contains(&profiles::model::Role::Ids);
        Ok(Gateway {
            learns: p.viaduct.learned_routes.clone(),
            passthrough,
            clear,
            router,
            ids,
            name: name.into(),
            letter: (b'a' + index) as char,
            profile: path,
            profile_files: p.files.clone(),
            red,
            host,
            wan,
            wan_len,
            wan_gateway,
            lan_mac: [0x52, 0x54, 0x00, 0x0a, index + 1, 1],
            wan_mac: [0x52, 0x54, 0x00, 0x0a, index + 1, 2],
            tunnels: p
                .viaduct
                .ipsec
                .iter()
                .flat_map(|i| i.peers.iter().flat_map(|p| p.tunnels.iter()))
                .map(|t| t.name.clone())
                .collect(),
        })
    }
}

/// Formats a MAC address for QEMU.
pub fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What `up` recorded, kept in `LAB/run/state.json`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Name tag of namespaces and taps.
    pub tag: String,
    /// Per gateway: QEMU start (ms since the epoch).
    pub started_ms: std::collections::BTreeMap<String, u64>,
    /// Per gateway: `appliance: ready` seen (ms since the epoch).
    pub ready_ms: std::collections::BTreeMap<String, u64>,
}

/// What `down` found still present afterwards (empty: clean).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Leftovers {
    /// Processes still alive.
    pub processes: Vec<String>,
    /// Network namespaces still present.
    pub namespaces: Vec<String>,
    /// Network interfaces still present in the host's namespace.
    pub links: Vec<String>,
    /// Run-time files still present.
    pub files: Vec<String>,
}

impl Leftovers {
    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.namespaces.is_empty()
            && self.links.is_empty()
            && self.files.is_empty()
    }
}

/// Milliseconds since the epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A lab directory and its gateways.
pub struct Lab {
    /// Options.
    pub opts: LabOptions,
    /// The two gateways.
    pub gateways: Vec<Gateway>,
    /// Name tag.
    pub tag: String,
}

impl Lab {
    /// Reads the lab profiles; creates nothing.
    pub fn open(opts: LabOptions) -> Result<Lab, Error> {
        std::fs::create_dir_all(&opts.dir)
            .map_err(io(format!("creating {}", opts.dir.display())))?;
        let canon = std::fs::canonicalize(&opts.dir)
            .map_err(io(format!("resolving {}", opts.dir.display())))?;
        let opts = LabOptions { dir: canon, ..opts };
        let digest = Sha256::digest(opts.dir.as_os_str().as_encoded_bytes());
        let tag = format!("tb{}", &hex::encode(digest)[..4]);
        let gateways = GATEWAYS
            .iter()
            .enumerate()
            .map(|(i, n)| Gateway::load(&opts.profiles, n, i as u8))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lab {
            opts,
            gateways,
            tag,
        })
    }

    /// `LAB/run`.
    pub fn run_dir(&self) -> PathBuf {
        self.opts.dir.join("run")
    }

    /// The internet's network namespace.
    pub fn inet_ns(&self) -> String {
        format!("{}-inet", self.tag)
    }

    /// A LAN host's network namespace.
    pub fn lan_ns(&self, g: &Gateway) -> String {
        format!("{}-lan-{}", self.tag, g.letter)
    }

    /// A gateway's tap for `role` (`lan` or `wan`).
    pub fn tap(&self, g: &Gateway, role: &str) -> String {
        format!("{}-{}-{role}", self.tag, g.letter)
    }

    /// `LAB/keys`: the lab's release key (`release.key`, encrypted with
    /// [`LAB_KEY_PASSPHRASE`], and `release.pub`), made on first use. A lab key:
    /// it signs the lab's images only.
    pub fn keys_dir(&self) -> PathBuf {
        self.opts.dir.join("keys")
    }

    /// The lab's release public key file (`LAB/keys/release.pub`).
    pub fn release_pub(&self) -> PathBuf {
        self.keys_dir().join("release.pub")
    }

    /// The CA file the lab's TPMs' EK certificates chain to (`LAB/run/tpm-ca.pem`,
    /// made by `up` with each lab's TPMs).
    pub fn tpm_ca(&self) -> PathBuf {
        self.run_dir().join("tpm-ca.pem")
    }

    /// The lab's release key, made (and written to [`Lab::keys_dir`]) on first use.
    ///
    /// # Errors
    /// The key cannot be read, made or written.
    pub fn release_key(&self) -> Result<std::sync::Arc<signing::SigningKey>, Error> {
        let dir = self.keys_dir();
        let key_path = dir.join("release.key");
        if let Ok(pem) = std::fs::read(&key_path) {
            let k = signing::SigningKey::from_encrypted_pem(
                &pem,
                LAB_KEY_PASSPHRASE.as_bytes(),
                &key_path.display().to_string(),
            )
            .map_err(|e| Error::State(format!("{}: {e}", key_path.display())))?;
            return Ok(std::sync::Arc::new(k));
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let k = signing::SigningKey::generate()
            .map_err(|e| Error::State(format!("making the lab's release key: {e}")))?;
        let pem = k
            .to_encrypted_pem(LAB_KEY_PASSPHRASE.as_bytes())
            .map_err(|e| Error::State(format!("encrypting the lab's release key: {e}")))?;
        for (path, bytes) in [
            (self.release_pub(), k.public_key().to_pem().into_bytes()),
            (key_path, pem.as_bytes().to_vec()),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(std::sync::Arc::new(k))
    }

    /// The image output directory of a gateway.
    pub fn image_dir(&self, g: &Gateway) -> PathBuf {
        self.opts.dir.join("images").join(&g.name)
    }

    /// A gateway's serial log.
    pub fn console_log(&self, g: &Gateway) -> PathBuf {
        self.opts.dir.join(format!("{}.console.log", g.name))
    }

    /// A gateway's console socket.
    pub fn console_socket(&self, g: &Gateway) -> PathBuf {
        self.run_dir().join(format!("{}.console.sock", g.name))
    }

    /// The capture of the internet segment.
    pub fn pcap(&self) -> PathBuf {
        self.opts.dir.join("internet.pcap")
    }

    /// A follower of a gateway's console.
    pub fn console(&self, g: &Gateway) -> LogConsole {
        LogConsole::new(&g.name, &self.console_log(g), &self.console_socket(g))
    }

    /// The gateway named `name` (`gw-a`, or just `a`).
    pub fn gateway(&self, name: &str) -> Result<&Gateway, Error> {
        self.gateways
            .iter()
            .find(|g| g.name == name || g.letter.to_string() == name)
            .ok_or_else(|| {
                Error::State(format!(
                    "no gateway {name:?} in the lab (gw-a or a, gw-b or b)"
                ))
            })
    }

    fn state_path(&self) -> PathBuf {
        self.run_dir().join("state.json")
    }

    /// The recorded state, if the lab is (or was left) up.
    pub fn state(&self) -> Option<State> {
        let bytes = std::fs::read(self.state_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save_state(&self, st: &State) -> Result<(), Error> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(io(format!("writing {}", path.display())))
    }

    /// The pid files of what the lab started.
    fn pid_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for g in &self.gateways {
            v.push(self.run_dir().join(format!("{}.qemu.pid", g.name)));
            v.push(self.run_dir().join(format!("{}.swtpm.pid", g.name)));
        }
        v.push(self.run_dir().join("tcpdump.pid"));
        v
    }

    /// Live processes the lab started: (pid, what).
    pub fn processes(&self) -> Vec<(u32, String)> {
        let run = self.run_dir();
        let mut v = Vec::new();
        for f in self.pid_files() {
            let Some(pid) = std::fs::read_to_string(&f)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            // Only if it is still ours: its command line names the run directory
            // or the lab directory.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&*run.to_string_lossy())
                || cmdline.contains(&*self.opts.dir.to_string_lossy())
            {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".pid").to_string())
                    .unwrap_or_default();
                v.push((pid, name));
            }
        }
        v
    }

    /// Whether the lab is up (state recorded and a QEMU of it alive).
    pub fn is_up(&self) -> bool {
        self.state().is_some() && self.processes().iter().any(|(_, n)| n.ends_with(".qemu"))
    }

    fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.inet_ns()];
        v.extend(self.gateways.iter().map(|g| self.lan_ns(g)));
        v
    }

    /// Builds each gateway's image into `LAB/images/<name>` unless the one there was
    /// built from the same inputs (profile files, lock, gateway binaries, this
    /// program). Returns, per gateway, whether it was built.
    pub fn ensure_images(&self, log: &mut dyn FnMut(&str)) -> Result<Vec<bool>, Error> {
        let mut built = Vec::new();
        for g in &self.gateways {
            if host::interrupted() {
                return Err(Error::Interrupted);
            }
            let out = self.image_dir(g);
            let stamp = self
                .opts
                .dir
                .join("images")
                .join(format!("{}.inputs", g.name));
            let fp = self.inputs_fingerprint(g)?;
            let current = std::fs::read_to_string(&stamp).ok();
            if out.join("disk.img").exists() && current.as_deref() == Some(fp.as_str()) {
                log(&format!("{}: image up to date ({})", g.name, out.display()));
                built.push(false);
                continue;
            }
            log(&format!(
                "{}: building {} from {}",
                g.name,
                out.display(),
                g.profile.display()
            ));
            let t = std::time::Instant::now();
            let _ = std::fs::remove_file(&stamp);
            self.build_image(g, &g.profile, &out)?;
            // The build may have moved the lock forward: fingerprint what was built.
            let fp = self.inputs_fingerprint(g)?;
            let tmp = stamp.with_extension("inputs.tmp");
            std::fs::write(&tmp, &fp)
                .and_then(|_| std::fs::rename(&tmp, &stamp))
                .map_err(io(format!("writing {}", stamp.display())))?;
            log(&format!(
                "{}: built in {:.1} s",
                g.name,
                t.elapsed().as_secs_f64()
            ));
            built.push(true);
        }
        Ok(built)
    }

    /// Builds gateway `g`'s image from `profile` into `out`, signed with the lab's
    /// release key.
    pub fn build_image(&self, g: &Gateway, profile: &Path, out: &Path) -> Result<(), Error> {
        let opts = builder::BuildOptions {
            profile: profile.to_path_buf(),
            out: out.to_path_buf(),
            qcow2: Some(false),
            cache_dir: self.opts.cache_dir.clone(),
            bin_dir: self.opts.bin_dir.clone(),
            compression: None,
            lock: builder::LockPolicy::default(),
            signing_key: Some(self.release_key()?),
            secure_boot: None,
        };
        builder::build(&opts, &mut |_| {}).map_err(|e| Error::Build {
            gateway: g.name.clone(),
            profile: profile.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    fn inputs_fingerprint(&self, g: &Gateway) -> Result<String, Error> {
        let mut files = g.profile_files.clone();
        files.push(builder::lock_path_for(&g.profile));
        files.push(self.opts.bin_dir.join("gateway-init"));
        files.push(self.opts.bin_dir.join("viaduct"));
        // The release key signs the image and is in its plan.
        self.release_key()?;
        files.push(self.release_pub());
        if let Ok(exe) = std::env::current_exe() {
            files.push(exe);
        }
        let mut h = Sha256::new();
        h.update(b"appliance testbed image inputs v1\n");
        for f in files {
            let bytes = std::fs::read(&f).map_err(io(format!("reading {}", f.display())))?;
            h.update(f.as_os_str().as_encoded_bytes());
            h.update(b"\n");
            h.update(Sha256::digest(&bytes));
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Brings the lab up: images, network, capture, both gateways, and waits for
    /// `appliance: ready` from each. On any error (Ctrl-C included) everything
    /// started so far is torn down before the error is returned.
    pub fn up(&self, log: &mut dyn FnMut(&str)) -> Result<State, Error> {
        host::check_tools()?;
        if self.is_up() {
            return Err(Error::State(format!(
                "the lab in {} is already up (`appliance testbed down --lab {}` first)",
                self.opts.dir.display(),
                self.opts.dir.display()
            )));
        }
        // Whatever a previous, interrupted run left.
        let _ = self.down();
        self.ensure_images(log)?;
        if host::interrupted() {
            return Err(Error::Interrupted);
        }
        match self.start(log) {
            Ok(st) => Ok(st),
            Err(e) => {
                log("tearing the lab down");
                let _ = self.down();
                Err(e)
            }
        }
    }

    fn start(&self, log: &mut dyn FnMut(&str)) -> Result<State, Error> {
        let run = self.run_dir();
        std::fs::create_dir_all(&run).map_err(io(format!("creating {}", run.display())))?;
        let mut st = State {
            tag: self.tag.clone(),
            ..State::default()
        };
        self.save_state(&st)?;

        // Network namespaces: the internet with its router, the LAN hosts.
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // No IPv6 in the lab: nothing autoconfigures or chatters.
            for conf in ["default", "all"] {
                host::run(in_netns(&ns, "sh").args([
                    "-c",
                    &format!("echo 1 > /proc/sys/net/ipv6/conf/{conf}/disable_ipv6"),
                ]))?;
            }
        }
        let inet = self.inet_ns();
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        let g0 = &self.gateways[0];
        if let Some(r) = g0.wan_gateway {
            let a = format!("{r}/{}", g0.wan_len);
            ip(&["-n", &inet, "addr", "add", &a, "dev", "br0"])?;
        }
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        // Gateways forwarding in clear (a firewall lab): the lab router is
        // the internet host and routes to their LANs, one to another
        // included, without redirecting (the gateways must see it all).
        if self.gateways.iter().any(|g| g.clear) {
            host::run(in_netns(&inet, "sh").args([
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && \
                 echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects && \
                 echo 0 > /proc/sys/net/ipv4/conf/br0/send_redirects",
            ]))?;
            for g in self.gateways.iter().filter(|g| g.clear) {
                let (net, len) = g.lan_net();
                ip(&[
                    "-n",
                    &inet,
                    "route",
                    "replace",
                    &format!("{net}/{len}"),
                    "via",
                    &g.wan.to_string(),
                ])?;
            }
        }

        // The capture, from before the first packet.
        let pcap = self.pcap();
        let dump_log = run.join("tcpdump.log");
        let mut dump = in_netns(&inet, "tcpdump");
        dump.args([
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-i",
            "br0",
            "-w",
        ])
        .arg(&pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&dump_log)
                .map_err(io(format!("creating {}", dump_log.display())))?,
        );
        std::os::unix::process::CommandExt::process_group(&mut dump, 0);
        let child = dump.spawn().map_err(io("starting tcpdump"))?;
        std::fs::write(run.join("tcpdump.pid"), child.id().to_string())
            .map_err(io("writing tcpdump.pid"))?;
        drop(child);
        let t = std::time::Instant::now();
        while !std::fs::read_to_string(&dump_log)
            .unwrap_or_default()
            .contains("listening on")
        {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(Error::State(format!(
                    "tcpdump did not start: {}",
                    std::fs::read_to_string(&dump_log).unwrap_or_default()
                )));
            }
            host::sleep(Duration::from_millis(50))?;
        }

        // Both gateways, as soon as possible (they boot in parallel).
        for g in &self.gateways {
            self.start_gateway(g, &mut st)?;
            log(&format!(
                "{}: started (serial log {})",
                g.name,
                self.console_log(g).display()
            ));
        }
        self.save_state(&st)?;

        // The taps: LAN host ends into their namespaces, internet ends onto the bridge.
        for g in &self.gateways {
            let lan = self.tap(g, "lan");
            let ns = self.lan_ns(g);
            ip(&["link", "set", &lan, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &lan, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/{}", g.host, g.red.1),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &g.red.0.to_string(),
            ])?;
            let wan = self.tap(g, "wan");
            ip(&["link", "set", &wan, "netns", &inet])?;
            ip(&["-n", &inet, "link", "set", &wan, "master", "br0", "up"])?;
        }

        // Ready?
        for g in &self.gateways {
            let mut c = self.console(g);
            let started = st.started_ms.get(&g.name).copied().unwrap_or(0);
            let left = self
                .opts
                .ready_timeout
                .saturating_sub(Duration::from_millis(
                    epoch_ms(SystemTime::now()).saturating_sub(started),
                ));
            let (_, _, at) = c.wait_for(
                &format!("`appliance: ready {} …`", g.name),
                0,
                left,
                |l| l.starts_with(&format!("appliance: ready {} ", g.name)),
                |l| l.starts_with("appliance: closed"),
            )?;
            st.ready_ms.insert(g.name.clone(), epoch_ms(at));
            log(&format!(
                "{}: ready after {:.1} s",
                g.name,
                (epoch_ms(at).saturating_sub(started)) as f64 / 1000.0
            ));
        }
        self.save_state(&st)?;
        Ok(st)
    }

    fn start_gateway(&self, g: &Gateway, st: &mut State) -> Result<(), Error> {
        let run = self.run_dir();
        let image = self.image_dir(g).join("disk.img");
        let mut cfg = if !self.opts.writable() {
            VmConfig::new(&g.name, &run, &image)
        } else {
            // A machine whose disk keeps what it writes (sealed secrets, boot
            // counters) across its reboots: a copy, never the built image.
            let copy = run.join(format!("{}.disk.img", g.name));
            host::run(
                Command::new("cp")
                    .arg("--sparse=always")
                    .arg(&image)
                    .arg(&copy),
            )?;
            let mut c = VmConfig::new(&g.name, &run, &copy);
            c.writable = true;
            c
        };
        cfg.memory_mib = self.opts.memory_mib;
        if g.passthrough {
            cfg.passthrough = true;
            cfg.memory_mib = cfg.memory_mib.max(PASSTHROUGH_MEMORY_MIB);
        }
        cfg.nics = vec![
            NicConfig {
                id: "lan".into(),
                slot: 2,
                netdev: format!("tap,ifname={},script=no,downscript=no", self.tap(g, "lan")),
                mac: Some(mac(&g.lan_mac)),
            },
            NicConfig {
                id: "wan".into(),
                slot: 3,
                netdev: format!("tap,ifname={},script=no,downscript=no", self.tap(g, "wan")),
                mac: Some(mac(&g.wan_mac)),
            },
        ];
        cfg.console = Console::Socket {
            socket: self.console_socket(g),
            log: self.console_log(g),
        };
        let files = vm::prepare(&cfg)?;
        // A TPM as a vendor ships it: an EK certificate from the lab's CA.
        vm::manufacture_tpm(&files.tpm_state, &run.join("tpm-ca"), &self.tpm_ca())?;
        let mut swtpm = vm::swtpm_command(&files);
        swtpm
            .arg("--daemon")
            .arg("--pid")
            .arg(format!(
                "file={}",
                run.join(format!("{}.swtpm.pid", g.name)).display()
            ))
            .arg("--log")
            .arg(format!(
                "file={}",
                run.join(format!("{}.swtpm.log", g.name)).display()
            ));
        std::os::unix::process::CommandExt::process_group(&mut swtpm, 0);
        host::run(&mut swtpm)?;
        if !vm::wait_for_socket(&files.tpm_socket, Duration::from_secs(10)) {
            return Err(Error::State(format!(
                "{}: swtpm did not create {}",
                g.name,
                files.tpm_socket.display()
            )));
        }
        let mut qemu = vm::qemu_command(&cfg, &files);
        qemu.arg("-daemonize")
            .arg("-pidfile")
            .arg(run.join(format!("{}.qemu.pid", g.name)));
        std::os::unix::process::CommandExt::process_group(&mut qemu, 0);
        st.started_ms
            .insert(g.name.clone(), epoch_ms(SystemTime::now()));
        host::run(&mut qemu)?;
        Ok(())
    }

    /// Tears the lab down: every process it started (QEMU, swtpm, tcpdump, anything
    /// running in its namespaces), its namespaces and taps, `LAB/run/`. Returns what
    /// is still there afterwards (normally nothing).
    pub fn down(&self) -> Result<Leftovers, Error> {
        let procs = self.processes();
        for (pid, _) in &procs {
            signal(*pid, "TERM");
        }
        for ns in self.namespaces() {
            for pid in netns_pids(&ns) {
                signal(pid, "KILL");
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while procs.iter().any(|(p, _)| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (pid, _) in &procs {
            if alive(*pid) {
                signal(*pid, "KILL");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for ns in self.namespaces() {
            if netns_exists(&ns) {
                let _ = ip(&["netns", "del", &ns]);
            }
        }
        for l in self.host_links() {
            let _ = ip(&["link", "del", &l]);
        }
        let run = self.run_dir();
        if run.exists() {
            std::fs::remove_dir_all(&run).map_err(io(format!("removing {}", run.display())))?;
        }
        Ok(Leftovers {
            processes: procs
                .iter()
                .filter(|(p, _)| alive(*p))
                .map(|(p, n)| format!("{n} (pid {p})"))
                .collect(),
            namespaces: self
                .namespaces()
                .into_iter()
                .filter(|n| netns_exists(n))
                .collect(),
            links: self.host_links(),
            files: if run.exists() {
                vec![run.display().to_string()]
            } else {
                Vec::new()
            },
        })
    }

    fn host_links(&self) -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{}-", self.tag)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A command to run on a LAN host (in its namespace).
    pub fn host_command(&self, g: &Gateway, program: &str) -> Command {
        in_netns(&self.lan_ns(g), program)
    }

    /// Human-readable state, one line per item.
    pub fn status(&self) -> Vec<String> {
        let mut v = Vec::new();
        let Some(st) = self.state() else {
            v.push(format!("lab {}: down", self.opts.dir.display()));
            return v;
        };
        let procs = self.processes();
        v.push(format!(
            "lab {}: {} (tag {})",
            self.opts.dir.display(),
            if self.is_up() {
                "up"
            } else {
                "broken (run `appliance testbed down`)"
            },
            st.tag
        ));
        for g in &self.gateways {
            let qemu = procs
                .iter()
                .find(|(_, n)| *n == format!("{}.qemu", g.name))
                .map(|(p, _)| format!("qemu pid {p}"))
                .unwrap_or_else(|| "qemu not running".into());
            let ready = match (st.started_ms.get(&g.name), st.ready_ms.get(&g.name)) {
                (Some(s), Some(r)) => {
                    format!("ready after {:.1} s", r.saturating_sub(*s) as f64 / 1000.0)
                }
                _ => "not ready".into(),
            };
            v.push(format!(
                "{}: {qemu}, {ready}; console {} (log {}); LAN host {} in netns {} (`appliance testbed exec {} -- CMD`)",
                g.name,
                self.console_socket(g).display(),
                self.console_log(g).display(),
                g.host,
                self.lan_ns(g),
                g.letter
            ));
        }
        v.push(format!(
            "internet: bridge br0 in netns {}, capture {}",
            self.inet_ns(),
            self.pcap().display()
        ));
        v
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid} 2>/dev/null")])
        .status();
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

fn netns_pids(ns: &str) -> Vec<u32> {
    if !netns_exists(ns) {
        return Vec::new();
    }
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Options for a lab in `dir/lab` from `profiles`, everything else under `dir`.
    fn options(dir: &Path, profiles: PathBuf) -> LabOptions {
        LabOptions {
            dir: dir.join("lab"),
            profiles,
            cache_dir: dir.join("cache"),
            bin_dir: dir.join("bin"),
            memory_mib: 1024,
            ready_timeout: Duration::from_secs(1),
            provision: Vec::new(),
            identity: false,
        }
    }

    #[test]
    fn the_lab_comes_from_the_lab_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = copy_lab_profiles(&repo(), &dir.path().join("p")).unwrap();
        let lab = Lab::open(options(dir.path(), profiles)).unwrap();
        let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
        assert_eq!((a.name.as_str(), a.letter), ("gw-a", 'a'));
        assert_eq!(a.red, (Ipv4Addr::new(10, 1, 0, 1), 24));
        assert_eq!(a.host, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(b.host, Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!((a.wan, a.wan_len), (Ipv4Addr::new(198, 51, 100, 1), 24));
        assert_eq!(b.wan, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(a.wan_gateway, Some(Ipv4Addr::new(198, 51, 100, 254)));
        assert_ne!(a.wan_mac, b.wan_mac);
        assert_eq!(mac(&a.lan_mac), "52:54:00:0a:01:01");
        // Names fit Linux's 15-byte interface names and carry the lab's tag.
        assert!(
            lab.tag.starts_with("tb") && lab.tag.len() == 6,
            "{}",
            lab.tag
        );
        for g in &lab.gateways {
            for n in [lab.tap(g, "lan"), lab.tap(g, "wan"), lab.lan_ns(g)] {
                assert!(n.len() <= 15 && n.starts_with(&lab.tag), "{n}");
            }
        }
        assert!(lab.gateway("b").is_ok() && lab.gateway("gw-c").is_err());
        // Another directory, another tag; nothing is up.
        let other = Lab::open(LabOptions {
            dir: dir.path().join("lab2"),
            ..lab.opts.clone()
        })
        .unwrap();
        assert_ne!(other.tag, lab.tag);
        assert!(!lab.is_up());
        assert_eq!(
            lab.status(),
            vec![format!("lab {}: down", lab.opts.dir.display())]
        );
    }

    #[test]
    fn a_profile_without_ipv4_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = copy_lab_profiles(&repo(), &dir.path().join("p")).unwrap();
        let gw_b = profiles.join("gw-b.toml");
        let text = std::fs::read_to_string(&gw_b)
            .unwrap()
            .replace("\"10.2.0.1/24\"", "\"fd00:2::1/64\"");
        std::fs::write(&gw_b, text).unwrap();
        let err = Lab::open(options(dir.path(), profiles))
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("gw-b.toml") && msg.contains("personalities.red.addresses"),
            "{msg}"
        );
    }
}
