#!/usr/bin/python3
"""Writes the seeds of the `ids_stage` target (seeds/ids_stage/): chunks of
`[flags, dt, len_hi, len_lo, datagram]` (flags bit 0: black -> red), each
seed a conversation the target's signatures care about: a handshake and a
request split inside its pattern, out-of-order and overlapping segments with
a drop, a server reply whose pattern blocks its stream, and UDP, ICMP,
another protocol and fragments. Deterministic; run from viaduct/fuzz."""
import os
import struct


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(src, dst, proto, l4, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0, bytes(src), bytes(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + l4


def tcp(sp, dp, seq, ack, flags, data=b""):
    return struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 0xFFFF, 0, 0) + data


def udp(sp, dp, data):
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


C, S = [10, 1, 0, 7], [203, 0, 113, 80]
SYN, ACK, PSH, RST = 2, 16, 8, 4


def chunk(inbound, pkt, dt=0):
    return bytes([1 if inbound else 0, dt]) + struct.pack("!H", len(pkt)) + pkt


def out(seq, flags, data=b""):
    return chunk(0, ip4(C, S, 6, tcp(40000, 80, seq, 5001, flags, data)))


def back(seq, flags, data=b""):
    return chunk(1, ip4(S, C, 6, tcp(80, 40000, seq, 1001, flags, data)))


hs = [
    chunk(0, ip4(C, S, 6, tcp(40000, 80, 1000, 0, SYN))),
    chunk(1, ip4(S, C, 6, tcp(80, 40000, 5000, 1001, SYN | ACK))),
    out(1001, ACK),
]
seeds = {
    "split_request": hs + [out(1001, ACK | PSH, b"GET / HTTP/1.0\r\nUA: ("), out(1022, ACK | PSH, b") { :; }\r\n\r\n")],
    "out_of_order_drop": hs + [out(1004, ACK, b"ack"), out(1001, ACK, b"att"), out(1001, ACK, b"atX"), out(1004, ACK, b"ack")],
    "reply_evil_blocked": hs + [back(5001, ACK, b"xxEV"), back(5005, ACK, b"IL!!"), back(5009, ACK, b"more"), out(1001, RST)],
    "udp_icmp_ip_frag": [
        chunk(0, ip4(C, S, 17, udp(1000, 53, b"..zz.."))),
        chunk(1, ip4(S, C, 1, bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"ping")),
        chunk(0, ip4(C, S, 47, b"\x00\x01gre")),
        chunk(0, ip4(C, S, 17, udp(1000, 53, b"zz" * 8), frag=0x2000)),
        chunk(0, ip4(C, S, 17, b"zz", frag=2)),
    ],
}
os.makedirs("seeds/ids_stage", exist_ok=True)
for name, chunks in seeds.items():
    with open(os.path.join("seeds/ids_stage", name), "wb") as f:
        f.write(b"".join(chunks))
print(f"{len(seeds)} seeds written")
