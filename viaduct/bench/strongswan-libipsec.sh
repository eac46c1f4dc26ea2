#!/bin/sh
# iperf3 single TCP flow through two strongSwan 5.9 gateways using the
# kernel-libipsec plugin (userspace ESP via a TUN device, ESP-in-UDP/4500;
# no kernel XFRM needed), compared with plain veth forwarding through one
# router namespace. Same layout and output as netns-throughput.sh:
#
#   lanA[eth0 10.1.0.1] -- (10.1.0.254)gwA(198.51.100.1) -- inet -- (198.51.100.2)gwB(10.2.0.254) -- lanB[eth0 10.2.0.1]
#   baseline: pA[10.1.0.1] --veth-- pR (forwarding) --veth-- pB[10.2.0.1]
#
# Each gateway runs its own /usr/lib/ipsec/charon inside its gateway netns and
# a private mount namespace (charon's pid file is hard-wired to
# /var/run/charon.pid, so /run is bind-mounted from a per-instance temp dir),
# with STRONGSWAN_CONF pointing at a per-instance strongswan.conf and a
# per-instance vici socket. IKEv2 + PSK (lab only), ESP aes128gcm16 by default.
#
# Needs root, iproute2, util-linux (unshare), iperf3 and strongSwan:
#   apt-get install -y strongswan-charon strongswan-swanctl libcharon-extra-plugins iperf3
# Usage: viaduct/bench/strongswan-libipsec.sh [esp_proposal] [seconds]
#   esp_proposal: strongSwan ESP proposal, e.g. aes128gcm16 (default),
#                 aes256gcm16, chacha20poly1305
# Set SWBENCH_KEEP=1 to keep the temp dir (charon logs) after the run.
set -eu
AEAD=${1:-aes128gcm16}
SECS=${2:-10}
CHARON=${CHARON_BIN:-/usr/lib/ipsec/charon}
P=swbench$$
TMP=$(mktemp -d)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    for n in lanA gwA gwB lanB pA pR pB; do ip netns del "$P$n" 2>/dev/null || true; done
    if [ "${SWBENCH_KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

fail() {
    echo "FAIL: $*" >&2
    for s in A B; do
        [ -f "$TMP/gw$s/charon.log" ] && { echo "--- charon gw$s log (tail) ---" >&2; tail -n 25 "$TMP/gw$s/charon.log" >&2; }
        if ip netns list 2>/dev/null | grep -q "^${P}gw$s"; then
            echo "--- gw$s links / rules / routes (all tables) ---" >&2
            ip -n "${P}gw$s" -br link >&2 || true
            ip -n "${P}gw$s" rule >&2 || true
            ip -n "${P}gw$s" route show table all | grep -v -E '^(local|broadcast|multicast|fe80|ff00)' >&2 || true
        fi
    done
    exit 1
}

for t in ip iperf3 unshare swanctl; do command -v $t >/dev/null || { echo "SKIP: $t missing (apt-get install -y iproute2 iperf3 util-linux strongswan-swanctl)"; exit 0; }; done
[ -x "$CHARON" ] || { echo "SKIP: $CHARON missing (apt-get install -y strongswan-charon)"; exit 0; }
[ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || { echo "SKIP: kernel-libipsec plugin missing (apt-get install -y libcharon-extra-plugins)"; exit 0; }
[ -c /dev/net/tun ] || { echo "SKIP: /dev/net/tun missing (kernel-libipsec needs TUN)"; exit 0; }

nsadd() { ip netns add "$P$1"; ip -n "$P$1" link set lo up; ip netns exec "$P$1" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'; }

# --- through the strongSwan gateways ---
for n in lanA gwA gwB lanB; do nsadd $n; done
ip -n "${P}gwA" link add inet type veth peer name inet netns "${P}gwB"
ip -n "${P}gwA" addr add 198.51.100.1/24 dev inet; ip -n "${P}gwA" link set inet up
ip -n "${P}gwB" addr add 198.51.100.2/24 dev inet; ip -n "${P}gwB" link set inet up
for side in A:10.1.0.1:10.1.0.254:10.2.0.0 B:10.2.0.1:10.2.0.254:10.1.0.0; do
    s=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; rest=${rest#*:}; gw=${rest%%:*}; peer=${rest#*:}
    ip -n "${P}lan$s" link add eth0 type veth peer name lan netns "${P}gw$s"
    # 1400 like the Viaduct bench's red MTU; libipsec's TUN (ipsec0) is 1400 too
    ip -n "${P}lan$s" link set eth0 mtu 1400 up
    ip -n "${P}lan$s" addr add "$me/24" dev eth0
    ip -n "${P}lan$s" route add "$peer/24" via "$gw"
    ip -n "${P}gw$s" link set lan mtu 1400 up
    ip -n "${P}gw$s" addr add "$gw/24" dev lan
done

# per-gateway strongswan.conf / swanctl.conf, private /run, vici socket
for side in A:198.51.100.1:198.51.100.2:10.1.0.0/24:10.2.0.0/24 B:198.51.100.2:198.51.100.1:10.2.0.0/24:10.1.0.0/24; do
    s=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; rest=${rest#*:}; them=${rest%%:*}; rest=${rest#*:}; lts=${rest%%:*}; rts=${rest#*:}
    D="$TMP/gw$s"; mkdir -p "$D/run"
    cat >"$D/strongswan.conf" <<EOF
charon {
    # kernel-libipsec first so it provides the IPsec backend; kernel-netlink
    # is then only used for addresses/routes (no XFRM on this kernel)
    load = random nonce openssl kdf pem pkcs1 x509 revocation constraints pubkey socket-default kernel-libipsec kernel-netlink vici updown
    install_routes = yes
    filelog {
        gw$s {
            path = $D/charon.log
            time_format = %T
            default = 1
            ike = 1
            knl = 1
            flush_line = yes
        }
    }
    syslog {
        daemon {
            default = -1
        }
    }
    plugins {
        vici {
            socket = unix://$D/charon.vici
        }
    }
}
swanctl {
    load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey
    socket = unix://$D/charon.vici
}
EOF
    cat >"$D/swanctl.conf" <<EOF
connections {
    bench {
        version = 2
        local_addrs = $me
        remote_addrs = $them
        proposals = aes128-sha256-x25519
        encap = yes
        local {
            auth = psk
            id = $me
        }
        remote {
            auth = psk
            id = $them
        }
        children {
            lan {
                local_ts = $lts
                remote_ts = $rts
                esp_proposals = $AEAD
                mode = tunnel
                start_action = none
            }
        }
    }
}
secrets {
    ike-bench {
        id-a = 198.51.100.1
        id-b = 198.51.100.2
        secret = "lab-only-not-a-secret-swbench"
    }
}
EOF
    ip netns exec "${P}gw$s" env STRONGSWAN_CONF="$D/strongswan.conf" \
        unshare -m --propagation private sh -c 'mount --bind "$1" /run && exec "$2"' sh "$D/run" "$CHARON" \
        >"$D/charon.out" 2>&1 &
    PIDS="$PIDS $!"
done

sw() { s=$1; shift; ip netns exec "${P}gw$s" env STRONGSWAN_CONF="$TMP/gw$s/strongswan.conf" swanctl "$@" --uri "unix://$TMP/gw$s/charon.vici"; }

for s in A B; do
    i=0; while [ ! -S "$TMP/gw$s/charon.vici" ]; do
        i=$((i+1)); [ $i -le 50 ] || fail "charon gw$s did not create its vici socket ($(cat "$TMP/gw$s/charon.out" 2>/dev/null))"; sleep 0.1
    done
    sw $s --load-all --file "$TMP/gw$s/swanctl.conf" >"$TMP/gw$s/load.out" 2>&1 || { cat "$TMP/gw$s/load.out" >&2; fail "swanctl --load-all on gw$s"; }
done
sw A --initiate --child lan --timeout 15 >"$TMP/initiate.out" 2>&1 || { tail -n 20 "$TMP/initiate.out" >&2; fail "swanctl --initiate --child lan"; }
i=0; for s in A B; do
    while ! sw $s --list-sas 2>/dev/null | grep -q INSTALLED; do
        i=$((i+1)); [ $i -le 50 ] || fail "CHILD_SA not INSTALLED on gw$s"; sleep 0.1
    done
done
if command -v ping >/dev/null; then
    ip netns exec "${P}lanA" ping -c 1 -W 3 10.2.0.1 >/dev/null 2>&1 || fail "no ping 10.1.0.1 -> 10.2.0.1 through the tunnel"
fi

ip netns exec "${P}lanB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
sleep 0.5
echo "== strongSwan $(sed -n 's/.*(strongSwan \([0-9.]*\),.*/\1/p' "$TMP/gwA/charon.log" | head -n 1) kernel-libipsec ($AEAD), single TCP flow, ${SECS}s =="
ip netns exec "${P}lanA" iperf3 -c 10.2.0.1 -t "$SECS" -f m >"$TMP/iperf.out" 2>&1 || true
grep -E "sender|receiver" "$TMP/iperf.out" || { cat "$TMP/iperf.out" >&2; fail "iperf3 through the tunnel failed"; }

# --- plain veth forwarding baseline ---
for n in pA pR pB; do nsadd $n; done
ip -n "${P}pA" link add eth0 type veth peer name toa netns "${P}pR"
ip -n "${P}pB" link add eth0 type veth peer name tob netns "${P}pR"
ip -n "${P}pA" addr add 10.1.0.1/24 dev eth0; ip -n "${P}pA" link set eth0 up
ip -n "${P}pB" addr add 10.2.0.1/24 dev eth0; ip -n "${P}pB" link set eth0 up
ip -n "${P}pR" addr add 10.1.0.254/24 dev toa; ip -n "${P}pR" link set toa up
ip -n "${P}pR" addr add 10.2.0.254/24 dev tob; ip -n "${P}pR" link set tob up
ip -n "${P}pA" route add default via 10.1.0.254
ip -n "${P}pB" route add default via 10.2.0.254
ip netns exec "${P}pB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
sleep 0.5
echo "== plain veth forwarding, single TCP flow, ${SECS}s =="
ip netns exec "${P}pA" iperf3 -c 10.2.0.1 -t "$SECS" -f m | grep -E "sender|receiver"
