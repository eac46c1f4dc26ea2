//! `viaduct-ike --policy FILE [--channel FD] [--credentials FD] [--signer FD
//! --identity-public HEX] [--no-confine]`: the Viaduct's IKE process. It reads
//! the compiled policy, takes the device credentials from `--credentials`
//! (read to the end, then closed) and, when the init hands one over, the
//! device identity key's signer (`--signer`, a `SOCK_SEQPACKET` socket; the
//! key's public point in hex as `--identity-public`), and
//! speaks to the data plane over the channel descriptor (default 3, a
//! `SOCK_SEQPACKET` or `SOCK_DGRAM` socket of a socketpair: one message per
//! record). It exits when the data plane closes the channel. Log lines go to
//! standard error; no key is ever written there. Once the policy and the
//! credentials are read it confines itself (`viaduct_ike::confine`: no
//! capabilities, no filesystem, a seccomp allowlist) unless `--no-confine`.
//! SIGUSR1 prints the SA table (`status peer …` lines: SPIs, roles,
//! transforms, ages, time to the next rekey and to expiry; never a key).
#![deny(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use ike::sa::{Entropy, Timestamp};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{recv, send, RecvFlags, SendFlags};
use viaduct_channel::{ToIke, MAX_RECORD};
use viaduct_ike::credentials::Credentials;
use viaduct_ike::driver::{Driver, Output};

/// Randomness from the kernel (aws-lc's generator, seeded by getrandom).
struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if aws_lc_rs::rand::fill(buf).is_err() {
            // Never carry on with predictable bytes.
            eprintln!("viaduct-ike: the random number generator failed");
            std::process::abort();
        }
    }
}

/// Descriptors the init passes down: the only `unsafe` of this binary.
#[allow(unsafe_code)]
mod sys;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("viaduct-ike: {msg}");
    std::process::exit(1)
}

struct Args {
    policy: String,
    channel: i32,
    credentials: Option<i32>,
    signer: Option<i32>,
    identity_public: Option<[u8; 65]>,
    no_confine: bool,
}

fn args() -> Args {
    let mut a = Args {
        policy: String::new(),
        channel: 3,
        credentials: None,
        signer: None,
        identity_public: None,
        no_confine: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-confine" {
            a.no_confine = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        let fd = |v: &str| {
            v.parse::<i32>()
                .ok()
                .filter(|n| *n > 2)
                .unwrap_or_else(|| fail(format!("{flag}: a descriptor number above 2")))
        };
        match flag.as_str() {
            "--policy" => a.policy = value,
            "--channel" => a.channel = fd(&value),
            "--credentials" => a.credentials = Some(fd(&value)),
            "--signer" => a.signer = Some(fd(&value)),
            "--identity-public" => {
                let mut point = [0u8; 65];
                if policy_blob::unhex(&value, &mut point).is_none() {
                    fail("--identity-public: the key's uncompressed point, 130 hex digits");
                }
                a.identity_public = Some(point);
            }
            _ => fail(format!(
                "unknown flag {flag}; usage: viaduct-ike --policy FILE [--channel FD] [--credentials FD] [--signer FD --identity-public HEX] [--no-confine]"
            )),
        }
    }
    if a.policy.is_empty() {
        fail("--policy FILE is required");
    }
    if a.signer.is_some() != a.identity_public.is_some() {
        fail("--signer and --identity-public go together");
    }
    a
}

fn main() {
    let a = args();
    // The inherited descriptors first, before this process opens any.
    let channel: OwnedFd = sys::inherited(a.channel)
        .unwrap_or_else(|| fail(format!("channel descriptor {} is not open", a.channel)));
    let creds_fd = a.credentials.map(|fd| {
        sys::inherited(fd)
            .unwrap_or_else(|| fail(format!("credential descriptor {fd} is not open")))
    });
    let signer_fd = a.signer.map(|fd| {
        sys::inherited(fd).unwrap_or_else(|| fail(format!("signer descriptor {fd} is not open")))
    });
    let blob = std::fs::read(&a.policy).unwrap_or_else(|e| fail(format!("{}: {e}", a.policy)));
    let policy =
        policy_blob::Policy::decode(&blob).unwrap_or_else(|e| fail(format!("{}: {e}", a.policy)));
    let creds = match creds_fd {
        None => Credentials::default(),
        Some(fd) => {
            let mut bytes = zeroize::Zeroizing::new(Vec::new());
            std::fs::File::from(fd)
                .read_to_end(&mut bytes)
                .unwrap_or_else(|e| fail(format!("reading the credentials: {e}")));
            Credentials::parse(&bytes).unwrap_or_else(|e| fail(e))
        }
    };
    let creds = match (signer_fd, a.identity_public) {
        (Some(fd), Some(public)) => {
            eprintln!("viaduct-ike: the device identity key signs through the init's signer");
            creds.with_identity(viaduct_ike::credentials::IdentitySigner {
                public,
                signer: std::sync::Arc::new(viaduct_ike::signer::TpmSigner::new(fd)),
            })
        }
        _ => creds,
    };
    drop(blob);
    let status_fd =
        sys::status_signal().unwrap_or_else(|e| fail(format!("the status signal: {e}")));
    // The generator's one-time set-up (aws-lc looks for a VM generation
    // counter, /dev/sysgenid) happens now, while the filesystem is there.
    SystemEntropy.fill(&mut [0u8; 32]);
    if a.no_confine {
        eprintln!("viaduct-ike: WARNING: running unconfined (--no-confine)");
    } else {
        match viaduct_ike::confine::confine() {
            Ok(c) if !c.landlock => {
                eprintln!("viaduct-ike: confined; Landlock unavailable on this kernel (seccomp has no open)")
            }
            Ok(_) => eprintln!("viaduct-ike: confined"),
            Err(e) => fail(format!("confinement: {e}")),
        }
    }
    let started = Instant::now();
    let now =
        || Timestamp::from_millis(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let (mut driver, log) = Driver::new(&policy, &creds, || SystemEntropy, now());
    drop(creds);
    for l in log {
        eprintln!("viaduct-ike: {l}");
    }
    eprintln!("viaduct-ike: {} peer(s)", driver.peers());
    let mut buf = vec![0u8; MAX_RECORD + 1];
    let mut out = driver.tick(now());
    loop {
        emit(&channel, out);
        let wait = driver
            .next_timer()
            .map(|t| t.saturating_since(now()))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        let ts = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 60,
            tv_nsec: 0,
        });
        let mut fds = [
            PollFd::new(&channel, PollFlags::IN),
            PollFd::new(&status_fd, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => {
                out = driver.tick(now());
                continue;
            }
            Ok(_)
                if !fds[0].revents().contains(PollFlags::IN)
                    && !fds[0].revents().contains(PollFlags::HUP) =>
            {
                // SIGUSR1: the SA table.
                let mut info = [0u8; 128];
                let _ = rustix::io::read(&status_fd, &mut info);
                for l in driver.status(now()) {
                    eprintln!("viaduct-ike: {l}");
                }
                out = driver.tick(now());
                continue;
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {
                out = Output::default();
                continue;
            }
            Err(e) => fail(format!("poll: {e}")),
        }
        let n = match recv(channel.as_fd(), &mut buf[..], RecvFlags::TRUNC) {
            Ok((_, 0)) => {
                eprintln!("viaduct-ike: the data plane closed the channel; exiting");
                return;
            }
            Ok((_, n)) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {
                out = Output::default();
                continue;
            }
            Err(e) => fail(format!("channel: {e}")),
        };
        let record = buf.get(..n).unwrap_or_default();
        out = match ToIke::decode(record) {
            Ok(m) => driver.from_data_plane(m, now()),
            Err(e) => {
                eprintln!("viaduct-ike: a record from the data plane was ignored: {e}");
                Output::default()
            }
        };
        let mut more = driver.tick(now());
        out.to_data_plane.append(&mut more.to_data_plane);
        out.log.append(&mut more.log);
    }
}

/// Sends the messages and prints the log lines.
fn emit(channel: &OwnedFd, out: Output) {
    for l in out.log {
        eprintln!("viaduct-ike: {l}");
    }
    for m in out.to_data_plane {
        let record = m.encode();
        if let Err(e) = send(channel.as_fd(), &record, SendFlags::empty()) {
            fail(format!("channel: {e}"));
        }
    }
}
