#!/usr/bin/env bash
# Manual boot check of gateway-init in QEMU with a swtpm TPM.
#
# Builds the static init, makes an initramfs (init + plan + policy + real Debian kernel
# modules), boots a Debian kernel directly (-kernel/-initrd, TCG, q35, SeaBIOS), waits
# for `appliance: ready`, types `poweroff` on the serial console and checks QEMU exits.
# Prints the PCR lines and the time from QEMU start to ready.
#
# Usage: gateway/scripts/qemu-check.sh [workdir]      (default /tmp/gw)
#   ACTION=reboot  types `reboot` instead of `poweroff` (QEMU runs with -no-reboot, so
#             it exits on the reboot too).
#   TAMPER=1  pins a wrong plan digest on the cmdline: the init must stay closed
#             (no `ready`), then still power off on request.
# Needs: cargo, qemu-system-x86, swtpm, cpio, dpkg (apt-get download for the kernel).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-/tmp/gw}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"

for tool in qemu-system-x86_64 swtpm cpio dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install qemu-system-x86 swtpm cpio dpkg)"; exit 2; }
done

# 1. Static init (and the host-side event log helper, built before the timed part).
(cd "$repo" && cargo build -q -p signing --example reassemble_eventlog)
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -p gateway --release --target x86_64-unknown-linux-gnu)
init="$repo/target/x86_64-unknown-linux-gnu/release/gateway-init"
file "$init" | grep -q 'static' || { echo "gateway-init is not static"; exit 1; }

# 2. Debian kernel (current ABI from linux-image-amd64).
pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
kver="${pkg#linux-image-}"
if [ ! -d "$work/kx/lib/modules/$kver" ]; then
    (cd "$work" && apt-get download "$pkg" && dpkg-deb -x "$pkg"_*.deb kx)
fi
kernel="$work/kx/boot/vmlinuz-$kver"
moddir="$work/kx/lib/modules/$kver/kernel"

# 3. Initramfs tree: /init, plan, policy, modules, /dev/console.
root="$work/root"
rm -rf "$root"
mkdir -p "$root/etc/appliance" "$root/lib/modules" "$root/dev" "$root/proc" "$root/sys" "$root/run"
cp "$init" "$root/init"
printf 'lab policy blob for the boot check\n' > "$root/etc/appliance/policy.bin"
# In dependency order (see `depends=` in each .ko's modinfo).
mods=(drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko net/core/failover.ko
      drivers/net/net_failover.ko drivers/net/virtio_net.ko drivers/net/dummy.ko)
plan_modules=""
for m in "${mods[@]}"; do
    cp "$moddir/$m" "$root/lib/modules/"
    plan_modules+="module /lib/modules/$(basename "$m")"$'\n'
done
policy_sha="$(sha256sum "$root/etc/appliance/policy.bin" | cut -d' ' -f1)"
# The plan format is canonical text (see gateway/README.md); written by hand here.
{
    printf 'appliance-plan 1\nprofile-name qemu-check\nprofile-version 0.1.0\nsecurity-version 1\n'
    printf 'policy-path /etc/appliance/policy.bin\npolicy-sha256 %s\n' "$policy_sha"
    printf '%s' "$plan_modules"
    printf 'end\n'
} > "$root/etc/appliance/plan"
plan_sha="$(sha256sum "$root/etc/appliance/plan" | cut -d' ' -f1)"
[ "${TAMPER:-0}" = 1 ] && plan_sha="$(printf x | sha256sum | cut -d' ' -f1)"
mknod -m 600 "$root/dev/console" c 5 1
cmdline="console=ttyS0 appliance.plan=$plan_sha panic=-1"
printf '%s\n' "$cmdline" > "$work/cmdline"
if [ "${TAMPER:-0}" != 1 ]; then
    "$init" --check "$root" "$work/cmdline"   # the tree must pass the init's own checks
fi
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) > "$work/initrd.img"

# 4. swtpm + QEMU, serial console on a pipe pair.
tpmdir="$work/tpm"
rm -rf "$tpmdir" && mkdir -p "$tpmdir"
swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$tpmdir/sock" \
    --log file="$tpmdir/log" &
swtpm_pid=$!
ser="$work/serial"
rm -f "$ser.in" "$ser.out" && mkfifo "$ser.in" "$ser.out"
cleanup() { kill "$swtpm_pid" 2>/dev/null || true; [ -n "${qemu_pid:-}" ] && kill "$qemu_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$tpmdir/sock" ] && break; sleep 0.1; done

start=$(date +%s.%N)
qemu-system-x86_64 -machine q35 -accel tcg -m 512 -display none -monitor none \
    -serial pipe:"$ser" -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.img" -append "$cmdline" \
    -chardev socket,id=chrtpm,path="$tpmdir/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
    -device tpm-tis,tpmdev=tpm0 &
qemu_pid=$!
exec 3>"$ser.in"
log="$work/console.log"
cat "$ser.out" > "$log" &
cat_pid=$!
ready_at=""
sent=0
deadline=$(( $(date +%s) + 300 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ $sent = 0 ] && grep -aqE 'appliance: (ready |closed:)' "$log"; then
        grep -aq 'appliance: ready ' "$log" && ready_at=$(date +%s.%N)
        sleep 0.5
        printf 'status\n' >&3
        sleep 0.5
        printf '%s\n' "${ACTION:-poweroff}" >&3
        sent=1
    fi
    grep -aqE 'reboot: (Power down|Restarting system)' "$log" && break
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.1
done
tr -d '\r' < "$log" | grep -a 'appliance: ' | grep -av 'appliance: eventlog [0-9a-f]' | sed 's/^.*appliance: /  /'
# QEMU must exit on its own after the power-off.
for _ in $(seq 100); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$qemu_pid" 2>/dev/null; then echo "FAIL: QEMU still running after poweroff"; exit 1; fi
wait "$qemu_pid" && qemu_rc=0 || qemu_rc=$?
qemu_pid=""
kill "$cat_pid" 2>/dev/null || true
end=$(date +%s.%N)
echo "console log: $log"
echo "qemu exit status: $qemu_rc; total $(echo "$end - $start" | bc) s"
if [ "${TAMPER:-0}" = 1 ]; then
    grep -aq 'appliance: ready' "$log" && { echo "FAIL: tampered plan reached ready"; exit 1; }
    grep -aq 'appliance: error: plan digest mismatch' "$log" || { echo "FAIL: no mismatch error"; exit 1; }
    echo "OK: tampered plan stayed closed and powered off"
else
    [ -n "$ready_at" ] || { echo "FAIL: never reached ready"; exit 1; }
    grep -ac 'appliance: pcr ' "$log" | grep -qx 3 || { echo "FAIL: expected 3 pcr lines"; exit 1; }
    grep -aq "appliance: ${ACTION:-poweroff}" "$log" || { echo "FAIL: no ${ACTION:-poweroff} line"; exit 1; }
    (cd "$repo" && cargo run -q -p signing --example reassemble_eventlog) < "$log" > "$work/eventlog.bin" \
        && echo "event log reassembled from the console: $work/eventlog.bin ($(stat -c %s "$work/eventlog.bin") bytes)"
    if command -v tpm2_eventlog >/dev/null && [ -s "$work/eventlog.bin" ]; then
        # Cross-check: replaying the event log must give the PCR values the init read.
        for n in 4 7; do
            replayed="$(tpm2_eventlog "$work/eventlog.bin" 2>/dev/null | sed -n '/^  sha256:/,/^  [a-z]/p' \
                | awk -v n="$n" '$1 == n {sub(/^0x/, "", $3); print $3}')"
            read_by_init="$(tr -d '\r' < "$log" | awk -v n="$n" '$2 == "pcr" && $3 == n {print $5}')"
            if [ "$replayed" = "$read_by_init" ]; then echo "pcr $n: event log replay matches ($replayed)";
            else echo "FAIL: pcr $n replay $replayed != read $read_by_init"; exit 1; fi
        done
    fi
    echo "OK: ready after $(echo "$ready_at - $start" | bc) s (QEMU start to ready, TCG)"
fi
