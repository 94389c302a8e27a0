# SPDX-License-Identifier: Apache-2.0
"""
TCP games for the escape tests: what an attacker with a shell and CAP_NET_RAW
in an enforced pod does to one live connection of its own. Run inside the
pod's network namespace (ip netns exec), stdlib only (no scapy).

  python3 tcp_games.py session --dst IP --port P --steps JSON [--iface eth0]

opens a real connection (a normal socket, so the pod's own TCP stack owns it),
learns its sequence numbers by sniffing the pod's interface (an AF_PACKET
socket, as tcpdump would) and runs the steps in order:

  {"op": "raw", "flags": "PA", "seq": -33, "payload": HEX, "urg": 0}
      one crafted segment on a raw socket: seq is relative to the pod's
      snd_nxt at that moment (the next byte its stack would send), ack is the
      server's snd_nxt; timestamps mirror the connection's when it uses them
  {"op": "send", "data": HEX, "oob": false}
      send() on the real socket (TCP_NODELAY; oob: MSG_OOB, the last byte urgent)
  {"op": "recv", "seconds": 2}
      read until the server closes, the connection is reset, or the time is up
  {"op": "pause", "ms": 50}
      let a segment leave on its own before the next step

and prints one JSON line: {isn, serverIsn, received (hex), sniffed (hex),
error, eof}. `sniffed` is the server's data as it reached the pod's interface
(each sequence number once, in order): what the attacker reads even when its
own stack drops it (an answer that acknowledges bytes the socket never sent).
Bounded: at most 32 steps, 10 s of reading, 3 s to connect. Importable:
tcp_segment() and checksum() build segments for either family.
"""
import json
import os
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 3
PACKET_OUTGOING = 4
FLAG_BITS = {'F': 0x01, 'S': 0x02, 'R': 0x04, 'P': 0x08, 'A': 0x10, 'U': 0x20}
MAX_STEPS = 32


def checksum(data):
    """The internet checksum (one's complement of the one's complement sum)."""
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp_segment(src, dst, sport, dport, seq, ack, flags, payload=b'', urg=0, window=65535, options=b''):
    """A TCP header and payload with its checksum over the IPv4 or IPv6 pseudo header."""
    options += b'\0' * (-len(options) % 4)
    hdr = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff, ack & 0xffffffff,
                      (5 + len(options) // 4) << 4, flags, window, 0, urg) + options
    seg = hdr + payload
    family = socket.AF_INET6 if ':' in src else socket.AF_INET
    s, d = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET:
        pseudo = s + d + struct.pack('!BBH', 0, socket.IPPROTO_TCP, len(seg))
    else:
        pseudo = s + d + struct.pack('!I3xB', len(seg), socket.IPPROTO_TCP)
    c = checksum(pseudo + seg)
    return seg[:16] + struct.pack('!H', c) + seg[18:]


def parse_frame(frame):
    """(src, dst, tcp header fields, payload) of an Ethernet frame carrying TCP, or None."""
    ethertype = struct.unpack('!H', frame[12:14])[0]
    if ethertype == 0x0800 and len(frame) >= 34 and frame[23] == socket.IPPROTO_TCP:
        ihl = (frame[14] & 0xf) * 4
        total = struct.unpack('!H', frame[16:18])[0]
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), socket.inet_ntop(socket.AF_INET, frame[30:34])
        l4, end = 14 + ihl, 14 + total
    elif ethertype == 0x86dd and len(frame) >= 54 and frame[20] == socket.IPPROTO_TCP:
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), socket.inet_ntop(socket.AF_INET6, frame[38:54])
        l4, end = 54, 54 + struct.unpack('!H', frame[18:20])[0]
    else:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack('!HHIIBB', frame[l4:l4 + 14])
    hlen = (off >> 4) * 4
    tsval = tsecr = None
    opts, i = frame[l4 + 20:l4 + hlen], 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 8 and opts[i + 1] == 10:
            tsval, tsecr = struct.unpack('!II', opts[i + 2:i + 10])
        i += opts[i + 1]
    return {'src': src, 'dst': dst, 'sport': sport, 'dport': dport, 'seq': seq, 'ack': ack, 'flags': flags,
            'payload': frame[l4 + hlen:end], 'tsval': tsval, 'tsecr': tsecr}


def after(a, b):
    """a comes after b in sequence space."""
    return 0 < ((a - b) & 0xffffffff) < 0x80000000


class Connection:
    """One real connection, its sequence numbers followed by sniffing the interface."""

    def __init__(self, iface, dst, port):
        self.sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sniffer.bind((iface, 0))
        self.sniffer.setblocking(False)
        family = socket.AF_INET6 if ':' in dst else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(3)
        self.sock.connect((dst, port))
        self.local, self.lport = self.sock.getsockname()[:2]
        self.remote, self.rport = dst, port
        self.raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.injected = set()  # (seq, flags, length) of our own crafted segments, not the stack's
        self.isn = self.server_isn = None
        self.snd_nxt = self.rcv_nxt = None
        self.ts_local = self.ts_remote = None
        self.server_data = {}  # seq -> payload of the server's data segments
        self.update()
        if self.isn is None or self.server_isn is None:
            raise RuntimeError('the handshake was not seen on %s' % iface)

    def update(self):
        """Take in what the sniffer saw since the last call."""
        while True:
            try:
                frame = self.sniffer.recv(65536)
            except BlockingIOError:
                return
            p = parse_frame(frame)
            if p is None:
                continue
            end = (p['seq'] + len(p['payload']) + (1 if p['flags'] & 0x03 else 0)) & 0xffffffff
            if (p['src'], p['sport'], p['dst'], p['dport']) == (self.local, self.lport, self.remote, self.rport):
                if (p['seq'], p['flags'], len(p['payload'])) in self.injected:
                    continue
                if p['flags'] & 0x02:
                    self.isn = p['seq']
                if self.snd_nxt is None or after(end, self.snd_nxt):
                    self.snd_nxt = end
                if p['tsval'] is not None:
                    self.ts_local = p['tsval']
            elif (p['src'], p['sport'], p['dst'], p['dport']) == (self.remote, self.rport, self.local, self.lport):
                if p['flags'] & 0x12 == 0x12:
                    self.server_isn = p['seq']
                if self.rcv_nxt is None or after(end, self.rcv_nxt):
                    self.rcv_nxt = end
                if p['tsval'] is not None:
                    self.ts_remote = p['tsval']
                if p['payload'] and p['seq'] not in self.server_data:
                    self.server_data[p['seq']] = p['payload']

    def inject(self, flags, rel_seq, payload=b'', urg=0):
        self.update()
        bits = 0
        for ch in flags:
            bits |= FLAG_BITS[ch]
        seq = (self.snd_nxt + rel_seq) & 0xffffffff
        options = b''
        if self.ts_local is not None and self.ts_remote is not None:
            options = b'\x01\x01\x08\x0a' + struct.pack('!II', self.ts_local, self.ts_remote)
        ack = self.rcv_nxt if bits & 0x10 else 0
        seg = tcp_segment(self.local, self.remote, self.lport, self.rport, seq, ack, bits, payload, urg, options=options)
        self.injected.add((seq, bits, len(payload)))
        self.raw.sendto(seg, (self.remote, 0))

    def recv(self, seconds):
        """(bytes, error, eof) within the time given."""
        got, deadline = b'', time.monotonic() + min(seconds, 10)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, None, False
            r, _, _ = select.select([self.sock, self.sniffer], [], [], left)
            if self.sniffer in r:
                self.update()
            if self.sock not in r:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                return got, os.strerror(e.errno) if e.errno else str(e), False
            if not data:
                return got, None, True
            got += data


def session(args):
    steps = json.loads(args['--steps'])
    if len(steps) > MAX_STEPS:
        raise ValueError('at most %d steps' % MAX_STEPS)
    c = Connection(args.get('--iface', 'eth0'), args['--dst'], int(args['--port']))
    out = {'isn': c.isn, 'serverIsn': c.server_isn, 'received': '', 'error': None, 'eof': False}
    got = b''
    try:
        for step in steps:
            op = step['op']
            if op == 'raw':
                c.inject(step['flags'], step['seq'], bytes.fromhex(step.get('payload', '')), step.get('urg', 0))
            elif op == 'send':
                c.sock.send(bytes.fromhex(step['data']), socket.MSG_OOB if step.get('oob') else 0)
            elif op == 'recv':
                data, err, eof = c.recv(step['seconds'])
                got += data
                out['error'], out['eof'] = err, eof
                if err or eof:
                    break
            elif op == 'pause':
                time.sleep(min(step['ms'], 1000) / 1000)
            else:
                raise ValueError('unknown step %r' % op)
    except OSError as e:
        out['error'] = os.strerror(e.errno) if e.errno else str(e)
    c.update()
    out['received'] = got.hex()
    base = c.server_isn + 1
    out['sniffed'] = b''.join(c.server_data[k] for k in sorted(c.server_data, key=lambda k: (k - base) & 0xffffffff)).hex()
    print(json.dumps(out), flush=True)


def main():
    if len(sys.argv) < 2 or sys.argv[1] != 'session':
        raise SystemExit('usage: tcp_games.py session --dst IP --port P --steps JSON [--iface IF]')
    rest = sys.argv[2:]
    session(dict(zip(rest[::2], rest[1::2])))


if __name__ == '__main__':
    main()
