//! Writes the lab policy blob of gateway A or B (manual keys, LAB ONLY) as
//! used by `bench/netns-throughput.sh`:
//! `write-lab-policy <aes128gcm16|aes256gcm16|chacha20poly1305> <a|b> <out-file> [udp]`
//! (`udp`: ESP in UDP, port 4500, RFC 3948). Prints the policy's
//! `--key-claim` digest.

use std::net::IpAddr;
use std::process::ExitCode;

use policy_blob::*;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (aead, side, out, udp) = match &args[..] {
        [aead, side, out] => (aead, side, out, false),
        [aead, side, out, u] if u == "udp" => (aead, side, out, true),
        _ => {
            eprintln!(
                "usage: write-lab-policy <aes128gcm16|aes256gcm16|chacha20poly1305> <a|b> <out-file> [udp]"
            );
            return ExitCode::from(2);
        }
    };
    let aead = match aead.as_str() {
        "aes128gcm16" => Aead::Aes128Gcm16,
        "aes256gcm16" => Aead::Aes256Gcm16,
        "chacha20poly1305" => Aead::ChaCha20Poly1305,
        other => {
            eprintln!("unknown AEAD {other:?}");
            return ExitCode::from(2);
        }
    };
    let a_side = side == "a";
    let ip = |s: &str| s.parse::<IpAddr>().expect("literal address");
    let (me, peer) = if a_side {
        (("203.0.113.1", "10.1.0.0"), ("203.0.113.2", "10.2.0.0"))
    } else {
        (("203.0.113.2", "10.2.0.0"), ("203.0.113.1", "10.1.0.0"))
    };
    let key = |seed: u8| {
        KeyMaterial::new(
            (0..aead.key_material_len())
                .map(|i| seed.wrapping_add(i as u8))
                .collect(),
        )
    };
    let (a2b, b2a) = (
        ManualSa {
            spi: Spi(0xa0b0),
            key: key(1),
        },
        ManualSa {
            spi: Spi(0xb0a0),
            key: key(101),
        },
    );
    let (outbound, inbound) = if a_side { (a2b, b2a) } else { (b2a, a2b) };
    let mine = Prefix::new(ip(me.1), 24);
    let theirs = Prefix::new(ip(peer.1), 24);
    let mut tunnel = Tunnel::new(1, "lab", ip(me.0), ip(peer.0), aead)
        .with_local_ts(TrafficSelector::prefix(mine))
        .with_remote_ts(TrafficSelector::prefix(theirs))
        .with_manual_keys(outbound, inbound);
    tunnel.udp_encap = udp;
    let policy = Policy::new("lab-bench", "1")
        .with_local(ip(me.0))
        .with_tunnel(tunnel)
        .with_spd(
            "to-peer",
            Selector::between(mine, theirs),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard);
    if let Err(e) = policy.validate() {
        eprintln!("invalid policy: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = std::fs::write(out, policy.encode()) {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::from(1);
    }
    // What `viaduct --key-claim` takes for it (on a lab host, where no TPM
    // ledger records the keys).
    println!("{}", policy_blob::hex(&policy.manual_key_uses().digest()));
    ExitCode::SUCCESS
}
