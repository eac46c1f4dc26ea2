//! Two `viaduct-ike` processes, each on a socketpair whose other end this
//! test holds, playing both data planes: IKE datagrams relayed between
//! them, installs collected. They establish from their compiled policies
//! alone, confined (seccomp, no capabilities), and exit when the channel
//! closes.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::FdFlags;
use rustix::net::{
    recv, send, socketpair, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType,
};
use std::time::{Duration, Instant};

use policy_blob::*;
use viaduct_channel::{check_install, IkeDatagram, SaInstall, ToDataPlane, ToIke};

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, d))
}

fn policy(me: u8) -> Policy {
    let other = 3 - me;
    let net =
        |n: u8| TrafficSelector::prefix(Prefix::new(IpAddr::V4(Ipv4Addr::new(10, n, 0, 0)), 24));
    let t = Tunnel::new(1, "t", v4(me), v4(other), Aead::ChaCha20Poly1305)
        .with_local_ts(net(me))
        .with_remote_ts(net(other));
    let mut p = Policy::new("gw", "1").with_local(v4(me)).with_tunnel(t);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Addr(v4(me)),
        private_key: None,
        peers: vec![IkePeer {
            name: format!("gw-{other}"),
            local: v4(me),
            remote: v4(other),
            remote_id: IkeIdentity::Addr(v4(other)),
            auth: IkeAuth::Psk(Credential::Device("peer-psk".into())),
            ike_proposals: vec![IkeProposal {
                aead: Aead::ChaCha20Poly1305,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
            esp_proposals: vec![EspProposal {
                aead: Aead::ChaCha20Poly1305,
                esn: false,
            }],
            pfs: None,
            ike_rekey_seconds: 3600,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(1)],
        }],
    });
    p.validate().unwrap();
    p
}

struct Side {
    channel: OwnedFd,
    child: std::process::Child,
    installs: Vec<SaInstall>,
    policy: Policy,
}

fn spawn(me: u8, dir: &std::path::Path) -> Side {
    let policy = policy(me);
    let path = dir.join(format!("gw-{me}.policy"));
    std::fs::write(&path, policy.encode()).unwrap();
    let creds = dir.join(format!("gw-{me}.creds"));
    std::fs::write(
        &creds,
        &viaduct_ike::credentials::Credentials::record(
            "peer-psk",
            b"thirty-two bytes of lab secret!!",
        )[..],
    )
    .unwrap();
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let creds_file = std::fs::File::open(&creds).unwrap();
    // The child inherits these two (and nothing else of ours).
    rustix::io::fcntl_setfd(&theirs, FdFlags::empty()).unwrap();
    rustix::io::fcntl_setfd(&creds_file, FdFlags::empty()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_viaduct-ike"))
        .args(["--policy", path.to_str().unwrap()])
        .args(["--channel", &theirs.as_raw_fd().to_string()])
        .args(["--credentials", &creds_file.as_raw_fd().to_string()])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("gw-{me}.log"))).unwrap())
        .spawn()
        .unwrap();
    drop(theirs);
    drop(creds_file);
    Side {
        channel: ours,
        child,
        installs: Vec::new(),
        policy,
    }
}

#[test]
fn two_processes_establish_over_their_channels() {
    let dir = std::env::temp_dir().join(format!("viaduct-ike-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut sides = [spawn(1, &dir), spawn(2, &dir)];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 70_000];
    while sides.iter().any(|s| s.installs.is_empty()) {
        assert!(Instant::now() < deadline, "no CHILD SA within 20 s");
        for from in 0..2 {
            let mut fds = [PollFd::new(&sides[from].channel, PollFlags::IN)];
            let ts = Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            if poll(&mut fds, Some(&ts)).unwrap() == 0 {
                continue;
            }
            let (_, n) = recv(&sides[from].channel, &mut buf[..], RecvFlags::empty()).unwrap();
            match ToDataPlane::decode(&buf[..n]).unwrap() {
                ToDataPlane::SendIke(d) => {
                    let m = ToIke::IkeDatagram(IkeDatagram {
                        peer: 0,
                        local_port: d.remote_port,
                        remote_port: d.local_port,
                        bytes: d.bytes,
                    });
                    send(&sides[1 - from].channel, &m.encode(), SendFlags::empty()).unwrap();
                }
                ToDataPlane::InstallSa(i) => {
                    check_install(&sides[from].policy, &i, |_| false).unwrap();
                    sides[from].installs.push(*i);
                }
                _ => {}
            }
        }
    }
    let (a, b) = (&sides[0].installs[0], &sides[1].installs[0]);
    assert_eq!(a.inbound_spi, b.outbound_spi);
    assert_eq!(a.key_out, b.key_in);
    assert_eq!(a.key_in, b.key_out);
    // Both ran confined: seccomp filter mode, no_new_privs, no capabilities.
    for s in &sides {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {k} in {status}"))
                .to_owned()
        };
        assert_eq!(field("Seccomp:"), "2", "{status}");
        assert_eq!(field("NoNewPrivs:"), "1", "{status}");
        assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
        assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    }
    // Closing the channel ends the process.
    for s in sides {
        let Side {
            channel, mut child, ..
        } = s;
        drop(channel);
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(Instant::now() < end, "viaduct-ike did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = std::fs::read_to_string(dir.join("gw-1.log")).unwrap();
    assert!(log.contains("established"), "{log}");
    assert!(!log.contains("thirty-two"), "a secret in the log");
    std::fs::remove_dir_all(&dir).ok();
}
