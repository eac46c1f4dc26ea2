//! `appliance update`: a bundle sent to a gateway's management port (on its
//! black side, which relays the bytes to the init), and the gateway's answer.
//!
//! With `--pubkey` the bundle is checked as the gateway will check it before
//! anything is sent. The answer is text whose last line is `ok: …` or
//! `refused: …`; an answer without one (the connection was cut, the time ran
//! out) leaves the outcome unknown, and the error says so.

use std::io::{IsTerminal, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use signing::keys::PublicKey;
use update_bundle::{wire, BundleError};

use crate::bundle_cmd::{check_bundle, read, split_bundle};
use crate::sign_cmd::read_public_key;
use crate::Outcome;

/// How long connecting may take (within `--timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bundle is sent in pieces of this size (the progress bar's steps).
const CHUNK: usize = 64 << 10;

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The gateway's management address on its black side: HOST[:PORT]
    /// (a name, an IPv4 or IPv6 address, or [IPv6]:PORT; default port 7443).
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// The bundle (from `appliance bundle`).
    #[arg(value_name = "NAME.bundle")]
    bundle: PathBuf,
    /// Check the bundle with this release key (NAME.pub) before sending it.
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Reboot the gateway into the new version once it is installed.
    #[arg(long)]
    reboot: bool,
    /// Seconds the whole exchange may take (connecting at most 10 of them).
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// `HOST[:PORT]` as (host, port): a name or IPv4 address with an optional
/// `:PORT`, a bare IPv6 address (optionally with a `%zone`), or
/// `[IPv6]:PORT`.
pub(crate) fn parse_target(s: &str) -> anyhow::Result<(String, u16)> {
    let bad = |why: String| {
        anyhow!(
            "{s:?}: {why} (give HOST[:PORT], e.g. 192.0.2.1, gw-a.example:7443, 2001:db8::1 or [2001:db8::1]:7443)"
        )
    };
    let is_v6 = |h: &str| {
        let addr = h
            .split_once('%')
            .map_or(h, |(a, zone)| if zone.is_empty() { "" } else { a });
        addr.parse::<Ipv6Addr>().is_ok()
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(format!("port {p:?} is not a number from 1 to 65535"))),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("no ] after the IPv6 address".into()))?;
        if !is_v6(host) {
            return Err(bad(format!("{host:?} is not an IPv6 address")));
        }
        let port = match after {
            "" => wire::DEFAULT_PORT,
            _ => port(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad(format!("{after:?} after the ]")))?,
            )?,
        };
        return Ok((host.to_string(), port));
    }
    if is_v6(s) {
        return Ok((s.to_string(), wire::DEFAULT_PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => {
            return Err(bad(
                "not an IPv6 address; an IPv6 address with a port is written [ADDRESS]:PORT".into(),
            ))
        }
        Some((h, p)) => (h, port(p)?),
        None => (s, wire::DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(bad("no host".into()));
    }
    Ok((host.to_string(), port))
}

/// What the bundle says it installs.
struct Described {
    name: String,
    version: String,
    security_version: u64,
    /// Checked with `--pubkey`.
    verified: bool,
}

/// Reads the bundle: its header, a UKI of the announced length, and what
/// it installs; with a key, checked as the gateway will check it.
fn read_bundle(
    path: &Path,
    key: Option<(&Path, &PublicKey)>,
) -> anyhow::Result<(Vec<u8>, Described)> {
    let bytes = read(path)?;
    let (h, uki) =
        split_bundle(&bytes).map_err(|e| anyhow!("{}: {e}; nothing was sent", path.display()))?;
    let about = match key {
        Some((key_path, key)) => {
            let r = check_bundle(&h, uki, key).map_err(|e| match e {
                BundleError::Signature { .. } => anyhow!(
                    "{}: manifest.sig does not verify with {} ({}): the bundle was changed, or another key signed it; nothing was sent",
                    path.display(),
                    key_path.display(),
                    key.fingerprint()
                ),
                e => anyhow!("{}: {e}; nothing was sent", path.display()),
            })?;
            Described {
                name: r.name,
                version: r.version,
                security_version: r.security_version,
                verified: true,
            }
        }
        None => {
            let m = signing::Manifest::from_json(&h.manifest)
                .map_err(|e| anyhow!("{}: manifest.json: {e}; nothing was sent", path.display()))?;
            Described {
                name: m.profile.name,
                version: m.profile.version,
                security_version: m.profile.security_version,
                verified: false,
            }
        }
    };
    Ok((bytes, about))
}

/// A line of the answer as it may be printed: control characters (a
/// terminal's escape sequences) replaced.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// The time left before `deadline`, or a timeout error.
fn left(deadline: Instant, timeout: u64) -> std::io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no outcome within {timeout} s (--timeout)"),
        )),
    }
}

fn timed_out(e: std::io::Error, timeout: u64) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no outcome within {timeout} s (--timeout)"),
        ),
        _ => e,
    }
}

pub(crate) fn connect(
    target: &str,
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: u64,
) -> anyhow::Result<(TcpStream, SocketAddr)> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("{target}: cannot resolve {host:?}; nothing was sent"))?
        .collect();
    if addrs.is_empty() {
        bail!("{target}: {host:?} has no address; nothing was sent");
    }
    let mut failures = Vec::new();
    for a in &addrs {
        let wait = left(deadline, timeout).map_or(Duration::ZERO, |d| d.min(CONNECT_TIMEOUT));
        if wait.is_zero() {
            failures.push(format!("{a}: no time left (--timeout {timeout})"));
            break;
        }
        match TcpStream::connect_timeout(a, wait) {
            Ok(s) => return Ok((s, *a)),
            Err(e) => failures.push(format!("{a}: {}", timed_out(e, timeout))),
        }
    }
    bail!(
        "cannot connect to {target} ({}); nothing was sent",
        failures.join("; ")
    )
}

/// The exchange after connecting: the request and the bundle, then the
/// answer. Returns the answer's bytes and, if the exchange broke off, why.
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    bundle: &[u8],
    bar: &ProgressBar,
    deadline: Instant,
    timeout: u64,
) -> (Vec<u8>, Option<String>) {
    let sent = (|| -> std::io::Result<()> {
        stream.set_write_timeout(Some(left(deadline, timeout)?))?;
        stream.write_all(request)?;
        for chunk in bundle.chunks(CHUNK) {
            stream.set_write_timeout(Some(left(deadline, timeout)?))?;
            stream.write_all(chunk)?;
            bar.inc(chunk.len() as u64);
        }
        stream.shutdown(Shutdown::Write)
    })()
    .map_err(|e| format!("sending the bundle: {}", timed_out(e, timeout)));
    bar.finish_and_clear();
    // A gateway that refuses part-way answers and closes: read its answer
    // even when sending failed.
    let mut answer = Vec::new();
    let received = (|| -> std::io::Result<()> {
        let mut buf = [0u8; 1024];
        loop {
            stream.set_read_timeout(Some(left(deadline, timeout)?))?;
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.len() > wire::MAX_ANSWER {
                answer.truncate(wire::MAX_ANSWER);
                return Err(std::io::Error::other(format!(
                    "the answer is longer than {} bytes (is this a gateway's management port?)",
                    wire::MAX_ANSWER
                )));
            }
        }
    })()
    .map_err(|e| format!("reading the answer: {}", timed_out(e, timeout)));
    let broke = match (sent, received) {
        (_, Err(r)) => Some(r),
        (Err(s), Ok(())) => Some(s),
        (Ok(()), Ok(())) => None,
    };
    (answer, broke)
}

pub fn update(args: UpdateArgs, json: bool) -> anyhow::Result<Outcome> {
    let (host, port) = parse_target(&args.target)?;
    let key = args
        .pubkey
        .as_deref()
        .map(|p| read_public_key(p).map(|k| (p, k)))
        .transpose()?;
    let key = key.as_ref().map(|(p, k)| (*p, k));
    let (bundle, about) = read_bundle(&args.bundle, key)?;
    let target = &args.target;
    let timeout = args.timeout;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let (mut stream, addr) = connect(target, &host, port, deadline, timeout)?;
    if !json {
        eprintln!(
            "sending {} {} (security version {}{}, {:.1} MiB) to {target} ({addr}){}",
            about.name,
            about.version,
            about.security_version,
            if about.verified {
                ", signature checked"
            } else {
                ", not checked here: no --pubkey"
            },
            bundle.len() as f64 / f64::from(1u32 << 20),
            if args.reboot { ", reboot after" } else { "" }
        );
    }
    let bar = if !json && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(bundle.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "sending [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let flags = if args.reboot { wire::FLAG_REBOOT } else { 0 };
    let request = wire::request(wire::ENDPOINT_UPDATE, flags);
    let (answer, broke) = exchange(&mut stream, &request, &bundle, &bar, deadline, timeout);
    drop(stream);

    let text = std::str::from_utf8(&answer);
    let shown = String::from_utf8_lossy(&answer);
    let lines: Vec<String> = shown.lines().map(printable).collect();
    let (outcome, message) = match text.ok().and_then(wire::outcome) {
        Some(Ok(m)) => ("ok", printable(m)),
        Some(Err(reason)) => ("refused", printable(reason)),
        None => {
            let cause = match (&broke, text) {
                (Some(b), _) => b.clone(),
                (None, Err(_)) => "the answer is not UTF-8 text".to_string(),
                (None, Ok(_)) if answer.is_empty() => {
                    "the gateway closed the connection without a word".to_string()
                }
                (None, Ok(_)) => "its last line is neither `ok: …` nor `refused: …`".to_string(),
            };
            (
                "unknown",
                format!(
                    "the answer from {target} ended without an outcome ({cause}): the update may or may not have been installed; running `appliance update` again is safe (the gateway refuses a version that is not newer than the one it runs)"
                ),
            )
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "host": target,
                "address": addr.to_string(),
                "bundle": args.bundle,
                "appliance": about.name,
                "version": about.version,
                "security_version": about.security_version,
                "verified": about.verified,
                "reboot": args.reboot,
                "outcome": outcome,
                "message": message,
                "answer_lines": lines,
            }))?
        );
        return Ok(if outcome == "ok" {
            Outcome::Ok
        } else {
            Outcome::Failed
        });
    }
    for l in &lines {
        println!("{l}");
    }
    match outcome {
        "ok" => Ok(Outcome::Ok),
        "refused" => bail!("{target} refused the update: {message}"),
        _ => bail!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_parse_as_host_and_port() {
        let p = |s: &str| parse_target(s).map_err(|e| e.to_string());
        assert_eq!(p("192.0.2.1"), Ok(("192.0.2.1".into(), 7443)));
        assert_eq!(p("192.0.2.1:8000"), Ok(("192.0.2.1".into(), 8000)));
        assert_eq!(p("gw-a.example"), Ok(("gw-a.example".into(), 7443)));
        assert_eq!(p("gw-a.example:1"), Ok(("gw-a.example".into(), 1)));
        assert_eq!(p("2001:db8::1"), Ok(("2001:db8::1".into(), 7443)));
        assert_eq!(p("::1"), Ok(("::1".into(), 7443)));
        assert_eq!(p("fe80::1%eth0"), Ok(("fe80::1%eth0".into(), 7443)));
        assert_eq!(p("[2001:db8::1]:9"), Ok(("2001:db8::1".into(), 9)));
        assert_eq!(p("[2001:db8::1]"), Ok(("2001:db8::1".into(), 7443)));
        for (bad, says) in [
            ("gw:0", "port \"0\""),
            ("gw:65536", "port \"65536\""),
            ("gw:", "port \"\""),
            (":7443", "no host"),
            ("", "no host"),
            ("2001:db8::1:99999", "written [ADDRESS]:PORT"),
            ("[2001:db8::1", "no ]"),
            ("[gw-a]:1", "not an IPv6 address"),
            ("[::1]x", "\"x\" after the ]"),
            ("[::1]:x", "port \"x\""),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("HOST[:PORT]"), "{bad:?}: {e}");
        }
    }
}
