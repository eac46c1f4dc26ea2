#!/bin/sh
# iperf3 single TCP flow through two Viaducts in network namespaces, compared
# with plain veth forwarding through one router namespace.
#
#   lanA[vred 10.1.0.1] =ViaductA= blkA[vblk]-inet(198.51.100.1) -- (198.51.100.2)inet-blkB[vblk] =ViaductB= lanB[vred 10.2.0.1]
#   baseline: pA[10.1.0.1] --veth-- pR (forwarding) --veth-- pB[10.2.0.1]
#
# Needs root, iproute2, iperf3 and a built viaduct + a policy writer:
#   cargo build --release -p viaduct --example write-lab-policy
# Usage: viaduct/bench/netns-throughput.sh [aead] [seconds]
#   aead: aes128gcm16 | aes256gcm16 | chacha20poly1305 (default aes128gcm16)
set -eu
AEAD=${1:-aes128gcm16}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${VIADUCT_BIN:-$ROOT/target/release/viaduct}
WRITER=${VIADUCT_POLICY_WRITER:-$ROOT/target/release/examples/write-lab-policy}
P=vdbench$$
TMP=$(mktemp -d)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for n in lanA blkA blkB lanB pA pR pB; do ip netns del "$P$n" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

for t in ip iperf3; do command -v $t >/dev/null || { echo "SKIP: $t missing (install iproute2 / iperf3)"; exit 0; }; done
[ -x "$BIN" ] && [ -x "$WRITER" ] || { echo "build first: cargo build --release -p viaduct --example write-lab-policy"; exit 1; }

nsadd() { ip netns add "$P$1"; ip -n "$P$1" link set lo up; ip netns exec "$P$1" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'; }

# --- through the Viaducts ---
for n in lanA blkA blkB lanB; do nsadd $n; done
ip -n "${P}blkA" link add inet type veth peer name inet netns "${P}blkB"
ip -n "${P}blkA" addr add 198.51.100.1/24 dev inet; ip -n "${P}blkA" link set inet up
ip -n "${P}blkB" addr add 198.51.100.2/24 dev inet; ip -n "${P}blkB" link set inet up
ip -n "${P}blkA" route add 203.0.113.2/32 via 198.51.100.2
ip -n "${P}blkB" route add 203.0.113.1/32 via 198.51.100.1
"$WRITER" "$AEAD" a "$TMP/a.pol"
"$WRITER" "$AEAD" b "$TMP/b.pol"
"$BIN" --policy "$TMP/a.pol" --red vred --red-netns "/run/netns/${P}lanA" --black vblk --black-netns "/run/netns/${P}blkA" 2>"$TMP/a.log" &
PIDS="$PIDS $!"
"$BIN" --policy "$TMP/b.pol" --red vred --red-netns "/run/netns/${P}lanB" --black vblk --black-netns "/run/netns/${P}blkB" 2>"$TMP/b.log" &
PIDS="$PIDS $!"
sleep 1
for side in A:10.1.0.1:10.2.0.0:203.0.113.1 B:10.2.0.1:10.1.0.0:203.0.113.2; do
    s=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; rest=${rest#*:}; peer=${rest%%:*}; gw=${rest#*:}
    ip -n "${P}lan$s" link set vred mtu 1400 up
    ip -n "${P}lan$s" addr add "$me/24" dev vred
    ip -n "${P}lan$s" route add "$peer/24" dev vred
    ip -n "${P}blk$s" link set vblk up
    ip -n "${P}blk$s" route add "$gw/32" dev vblk
done
ip netns exec "${P}lanB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
sleep 0.5
echo "== viaduct ($AEAD), single TCP flow, ${SECS}s =="
ip netns exec "${P}lanA" iperf3 -c 10.2.0.1 -t "$SECS" -f m | grep -E "sender|receiver"

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
