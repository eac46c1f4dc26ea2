#!/usr/bin/env python3
"""nftables as an oracle for the Viaduct's filter stage.

Run inside a fresh network namespace (`ip netns exec NS python3 nft_oracle.py
RULESET`): makes two TUN devices, `red` and `black`, routes the LAN prefixes
(argv[2:], e.g. 10.1.0.0/16) via red and everything else via black, forwards
between them, loads RULESET (`appliance policy export --format nft`) and sets
conntrack as the Viaduct tracks: only a bare SYN opens a TCP connection
(nf_conntrack_tcp_loose=0), sequence and window tracking on
(nf_conntrack_tcp_be_liberal=0, its default), no checksum verification
(nf_conntrack_checksum=0).

Reads one packet per line on stdin, `in HEX` (from black) or `out HEX` (from
red), IPv4 each with its own IP identification, IPv6 each with its own flow
label; writes one verdict per line: `accept` when the packet came out of the
other device within the wait, else `drop`.
"""
import fcntl
import os
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
WAIT = 0.15


def sh(*args):
    subprocess.run(args, check=True)


def sysctl(key, value):
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(str(value))


def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def drain(fd):
    out = []
    while True:
        try:
            out.append(os.read(fd, 65536))
        except BlockingIOError:
            return out


def main():
    ruleset, lans = sys.argv[1], sys.argv[2:]
    fds = {"red": tun("red"), "black": tun("black")}
    sh("ip", "link", "set", "lo", "up")
    for conf in ("all", "default"):
        sysctl(f"net.ipv6.conf.{conf}.disable_ipv6", 0)
        # No router solicitations or duplicate address detection: nothing
        # leaves the devices but what is forwarded.
        sysctl(f"net.ipv6.conf.{conf}.accept_dad", 0)
        sysctl(f"net.ipv6.conf.{conf}.router_solicitations", 0)
        sysctl(f"net.ipv6.conf.{conf}.addr_gen_mode", 1)
        sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)
    for name in fds:
        sysctl(f"net.ipv4.conf.{name}.rp_filter", 0)
        sh("ip", "link", "set", name, "up")
    sh("ip", "addr", "add", "192.0.2.1/32", "dev", "red")
    sh("ip", "addr", "add", "192.0.2.2/32", "dev", "black")
    sh("ip", "-6", "addr", "add", "2001:db8:ffff::1/128", "dev", "red", "nodad")
    sh("ip", "-6", "addr", "add", "2001:db8:ffff::2/128", "dev", "black", "nodad")
    for p in lans:
        sh("ip", "-6" if ":" in p else "-4", "route", "add", p, "dev", "red")
    sh("ip", "route", "add", "default", "dev", "black")
    sh("ip", "-6", "route", "add", "default", "dev", "black")
    sysctl("net.ipv4.ip_forward", 1)
    sysctl("net.ipv6.conf.all.forwarding", 1)
    sh("nft", "-f", ruleset)
    # The conntrack sysctls exist once nf_conntrack is loaded (the ruleset's
    # `ct state` loads it).
    sysctl("net.netfilter.nf_conntrack_tcp_loose", 0)
    sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", 0)
    sysctl("net.netfilter.nf_conntrack_checksum", 0)
    # No connection times out while the corpus runs (the Viaduct's clock
    # stands still): what is compared is the state machine, not the timers.
    for key in os.listdir("/proc/sys/net/netfilter"):
        if key.startswith("nf_conntrack_") and key.endswith("_timeout") or "_timeout_" in key:
            try:
                sysctl("net.netfilter." + key, 3600)
            except OSError:
                pass
    time.sleep(0.2)
    for fd in fds.values():
        drain(fd)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        direction, hexed = line.split()
        pkt = bytes.fromhex(hexed)
        v6 = pkt[0] >> 4 == 6

        def same(got):
            if v6:
                return (len(got) >= 40 and got[0] >> 4 == 6 and got[1:4] == pkt[1:4]
                        and got[8:40] == pkt[8:40])
            return (len(got) >= 20 and got[0] >> 4 == 4 and got[4:6] == pkt[4:6]
                    and got[12:20] == pkt[12:20])
        src, dst = ("black", "red") if direction == "in" else ("red", "black")
        os.write(fds[src], pkt)
        verdict = "drop"
        deadline = time.monotonic() + WAIT
        while verdict == "drop":
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fds[dst]], [], [], left)
            if not r:
                break
            for got in drain(fds[dst]):
                if same(got):
                    verdict = "accept"
        drain(fds[src])
        print(verdict, flush=True)


if __name__ == "__main__":
    main()
