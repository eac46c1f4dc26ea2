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
# Environment:
#   VIADUCT_ARGS  extra arguments for both Viaducts (e.g. --no-offload for an A/B run)
#   BENCH_MTU     MTU of the red TUNs and of the plain-forwarding veths (default 1400)
#   BENCH_PLAIN=0 skip the plain forwarding baseline
#   BENCH_TXQ     txqueuelen of the TUNs (default 500, the kernel's)
#   BENCH_UDP64=1 also send UDP with 64-byte packets (packet rate)
#   BENCH_ENCAP=udp  ESP in UDP, port 4500 (RFC 3948) instead of ESP; black
#                 then carries UDP segmentation offload (kernel >= 6.2)
#   BENCH_RELAY=1 also run the TUN ceiling: the same layout with
#                 examples/tun-relay in the Viaducts' place (frames moved
#                 unchanged between the TUNs: no ESP, no segmentation)
# After the run it prints each Viaduct's counters (reads, writes, segments,
# coalesced frames) and the CPU seconds each process used.
set -eu
AEAD=${1:-aes128gcm16}
SECS=${2:-10}
MTU=${BENCH_MTU:-1400}
VARGS=${VIADUCT_ARGS:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${VIADUCT_BIN:-$ROOT/target/release/viaduct}
WRITER=${VIADUCT_POLICY_WRITER:-$ROOT/target/release/examples/write-lab-policy}
P=vdbench$$
TMP=$(mktemp -d)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done; sleep 0.5; [ -z "${BENCH_KEEP_LOGS:-}" ] || cat "$TMP"/a.log
    for n in lanA blkA blkB lanB rlanA rblkA rblkB rlanB pA pR pB; do ip netns del "$P$n" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

for t in ip iperf3; do command -v $t >/dev/null || { echo "SKIP: $t missing (install iproute2 / iperf3)"; exit 0; }; done
[ -x "$BIN" ] && [ -x "$WRITER" ] || { echo "build first: cargo build --release -p viaduct --example write-lab-policy"; exit 1; }

nsadd() { ip netns add "$P$1"; ip -n "$P$1" link set lo up; ip netns exec "$P$1" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'; }

# --- through the Viaducts ---
for n in lanA blkA blkB lanB; do nsadd $n; done
ip -n "${P}blkA" link add inet type veth peer name inet netns "${P}blkB"
OUTER_MTU=$((MTU + 100))
ip -n "${P}blkA" link set inet mtu "$OUTER_MTU"; ip -n "${P}blkB" link set inet mtu "$OUTER_MTU"
ip -n "${P}blkA" addr add 198.51.100.1/24 dev inet; ip -n "${P}blkA" link set inet up
ip -n "${P}blkB" addr add 198.51.100.2/24 dev inet; ip -n "${P}blkB" link set inet up
ip -n "${P}blkA" route add 203.0.113.2/32 via 198.51.100.2
ip -n "${P}blkB" route add 203.0.113.1/32 via 198.51.100.1
ENCAP=${BENCH_ENCAP:-esp}
case $ENCAP in esp) EARG="" ;; udp) EARG=udp ;; *) echo "BENCH_ENCAP: esp or udp"; exit 1 ;; esac
# The writer prints each policy's key-use claim (no TPM ledger on a bench host).
# shellcheck disable=SC2086
KA=$("$WRITER" "$AEAD" a "$TMP/a.pol" $EARG)
# shellcheck disable=SC2086
KB=$("$WRITER" "$AEAD" b "$TMP/b.pol" $EARG)
# shellcheck disable=SC2086
"$BIN" --policy "$TMP/a.pol" --key-claim "$KA" --red vred --red-netns "/run/netns/${P}lanA" --black vblk --black-netns "/run/netns/${P}blkA" $VARGS 2>"$TMP/a.log" &
VA=$!
# shellcheck disable=SC2086
"$BIN" --policy "$TMP/b.pol" --key-claim "$KB" --red vred --red-netns "/run/netns/${P}lanB" --black vblk --black-netns "/run/netns/${P}blkB" $VARGS 2>"$TMP/b.log" &
VB=$!
PIDS="$PIDS $VA $VB"
sleep 1
for side in A:10.1.0.1:10.2.0.0:203.0.113.1 B:10.2.0.1:10.1.0.0:203.0.113.2; do
    s=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; rest=${rest#*:}; peer=${rest%%:*}; gw=${rest#*:}
    ip -n "${P}lan$s" link set vred mtu "$MTU" up
    ip -n "${P}lan$s" addr add "$me/24" dev vred
    ip -n "${P}lan$s" route add "$peer/24" dev vred
    ip -n "${P}blk$s" link set vblk mtu "$OUTER_MTU" txqueuelen "${BENCH_TXQ:-500}" up
    ip -n "${P}lan$s" link set vred txqueuelen "${BENCH_TXQ:-500}"
    ip -n "${P}blk$s" route add "$gw/32" dev vblk
done
ip netns exec "${P}lanB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
sleep 0.5
echo "== viaduct ($AEAD, $ENCAP), single TCP flow, ${SECS}s =="
if [ -n "${BENCH_UDP64:-}" ]; then
    # Small packets: UDP with 64-byte IP packets (36 bytes of payload), unlimited rate.
    ip netns exec "${P}lanB" iperf3 -s -1 -B 10.2.0.1 -p 5202 >/dev/null 2>&1 &
    sleep 0.5
    echo "== viaduct ($AEAD), UDP, 64-byte packets, ${SECS}s =="
    ip netns exec "${P}lanA" iperf3 -c 10.2.0.1 -p 5202 -u -l 36 -b 0 -t "$SECS" -f m | grep -E "sender|receiver"
fi
cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
# Host CPU: "busy stolen total" jiffies from /proc/stat (stolen: taken by the
# hypervisor for other guests), and the shares between two readings.
hostcpu() { awk '/^cpu /{t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6-$9, $9, t}' /proc/stat; }
busy() { echo "$1 $2" | awk '{t=$6-$3; printf "%.0f%% busy, %.0f%% stolen by the hypervisor", 100*($4-$1)/t, 100*($5-$2)/t}'; }
# One timed single-flow iperf3 run from netns $1 to 10.2.0.1, with the host
# CPU shares around it.
iperf_run() {
    h0=$(hostcpu)
    ip netns exec "$1" iperf3 -c 10.2.0.1 -t "$SECS" -f m | grep -E "sender|receiver"
    h1=$(hostcpu)
    echo "host CPU during the run ($(nproc) cores): $(busy "$h0" "$h1")"
}
ca0=$(cpu $VA); cb0=$(cpu $VB)
iperf_run "${P}lanA"
ca1=$(cpu $VA); cb1=$(cpu $VB)
for s in A B; do
    echo "TX drops ($s): vblk $(ip -n "${P}blk$s" -s link show vblk | awk '/TX:/{getline; print $4}')  vred $(ip -n "${P}lan$s" -s link show vred | awk '/TX:/{getline; print $4}')"
done
echo "red tun_flags: A $(ip netns exec "${P}lanA" cat /sys/class/net/vred/tun_flags)  B $(ip netns exec "${P}lanB" cat /sys/class/net/vred/tun_flags)"
echo "black tun_flags: A $(ip netns exec "${P}blkA" cat /sys/class/net/vblk/tun_flags)  B $(ip netns exec "${P}blkB" cat /sys/class/net/vblk/tun_flags)"
echo "viaduct CPU seconds during the run: A $(echo "$ca1 $ca0" | awk '{print $1-$2}')  B $(echo "$cb1 $cb0" | awk '{print $1-$2}')"
kill -USR1 $VA $VB; sleep 0.5
for s in a b; do
    echo "-- viaduct $s counters --"
    grep -E "offloads|red->black:|black->red:" "$TMP/$s.log" | tail -n 5
done

# --- the TUN ceiling: same layout, frames relayed unchanged ---
if [ -n "${BENCH_RELAY:-}" ]; then
    RELAY=${VIADUCT_RELAY_BIN:-$ROOT/target/release/examples/tun-relay}
    [ -x "$RELAY" ] || { echo "build first: cargo build --release -p viaduct --example tun-relay"; exit 1; }
    for n in rlanA rblkA rblkB rlanB; do nsadd $n; done
    ip -n "${P}rblkA" link add inet type veth peer name inet netns "${P}rblkB"
    ip -n "${P}rblkA" addr add 198.51.100.1/24 dev inet; ip -n "${P}rblkA" link set inet mtu "$OUTER_MTU" up
    ip -n "${P}rblkB" addr add 198.51.100.2/24 dev inet; ip -n "${P}rblkB" link set inet mtu "$OUTER_MTU" up
    "$RELAY" vred "/run/netns/${P}rlanA" vblk "/run/netns/${P}rblkA" 2>"$TMP/ra.log" &
    RA=$!
    "$RELAY" vred "/run/netns/${P}rlanB" vblk "/run/netns/${P}rblkB" 2>"$TMP/rb.log" &
    RB=$!
    PIDS="$PIDS $RA $RB"
    sleep 1
    for side in A:10.1.0.1:10.2.0.0:198.51.100.2 B:10.2.0.1:10.1.0.0:198.51.100.1; do
        s=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; rest=${rest#*:}; peer=${rest%%:*}; other=${rest#*:}
        ip -n "${P}rlan$s" link set vred mtu "$MTU" txqueuelen "${BENCH_TXQ:-500}" up
        ip -n "${P}rlan$s" addr add "$me/24" dev vred
        ip -n "${P}rlan$s" route add "$peer/24" dev vred
        ip -n "${P}rblk$s" link set vblk mtu "$OUTER_MTU" txqueuelen "${BENCH_TXQ:-500}" up
        ip -n "${P}rblk$s" route add "${me%.*}.0/24" dev vblk
        ip -n "${P}rblk$s" route add "$peer/24" via "$other"
    done
    ip netns exec "${P}rlanB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
    sleep 0.5
    echo "== TUN ceiling (tun-relay, no processing, same layout), single TCP flow, ${SECS}s =="
    grep offloads "$TMP/ra.log"
    ca0=$(cpu $RA); cb0=$(cpu $RB)
    iperf_run "${P}rlanA"
    ca1=$(cpu $RA); cb1=$(cpu $RB)
    echo "relay CPU seconds during the run: A $(echo "$ca1 $ca0" | awk '{print $1-$2}')  B $(echo "$cb1 $cb0" | awk '{print $1-$2}')"
fi

[ "${BENCH_PLAIN:-1}" = 0 ] && exit 0

# --- plain veth forwarding baseline ---
for n in pA pR pB; do nsadd $n; done
ip -n "${P}pA" link add eth0 type veth peer name toa netns "${P}pR"
ip -n "${P}pB" link add eth0 type veth peer name tob netns "${P}pR"
for l in pA:eth0 pB:eth0 pR:toa pR:tob; do ip -n "$P${l%%:*}" link set "${l#*:}" mtu "$MTU"; done
ip -n "${P}pA" addr add 10.1.0.1/24 dev eth0; ip -n "${P}pA" link set eth0 up
ip -n "${P}pB" addr add 10.2.0.1/24 dev eth0; ip -n "${P}pB" link set eth0 up
ip -n "${P}pR" addr add 10.1.0.254/24 dev toa; ip -n "${P}pR" link set toa up
ip -n "${P}pR" addr add 10.2.0.254/24 dev tob; ip -n "${P}pR" link set tob up
ip -n "${P}pA" route add default via 10.1.0.254
ip -n "${P}pB" route add default via 10.2.0.254
ip netns exec "${P}pB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 &
sleep 0.5
echo "== plain veth forwarding, single TCP flow, ${SECS}s =="
iperf_run "${P}pA"
