/*
 * A tiny real client and server for tests, run inside a test's network
 * namespaces (ip netns exec NS node dist/test/helpers/nettool.js ...).
 *   serve --tcp 80,443 --udp 5353       listen on [::] (dual stack); print "ready"
 *   probe tcp|udp HOST PORT [--timeout-ms N] [--bind ADDR]
 *                                        print one JSON line {ok, error?, ms}
 *   send udp HOST PORT --count N         send N datagrams (at most 10000), no reply awaited
 *   hold tcp|udp HOST PORT --seconds S   keep one connection (one UDP socket), echo a byte
 *                                        every 200 ms; {ok} when every echo came back;
 *                                        SIGTERM ends it early, at the next echo check
 *   query-flood SERVER --count N         N DNS queries (at most 100000), distinct (port, id)
 *   flows udp HOST PORT --count N        N UDP flows (at most 5000): one datagram from each of N sockets
 *   query SERVER NAME --id ID --sport P [--type A|AAAA]
 *                                        send one DNS query (no wait for the answer)
 *   forge --bind ADDR --to ADDR --port P --id ID --name N --answer IP [--ttl S]
 *                                        send a DNS answer from ADDR:53 (tests of forged answers)
 *   dns-tcp-serve --bind ADDR --answer IP --split BYTES
 *                                        a DNS-over-TCP server on ADDR:53 answering every query
 *                                        with IP, its reply written in two segments (the first
 *                                        BYTES bytes, 50 ms, the rest); print "ready"
 * TCP server: greets with "hello\n" and echoes. UDP server: echoes.
 */
import { createServer, connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';

function flag(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}

function ports(text: string): number[] {
  return text === '' ? [] : text.split(',').map((p) => Number(p));
}

async function serve(args: string[]): Promise<void> {
  const listening: Promise<void>[] = [];
  for (const port of ports(flag(args, '--tcp', ''))) {
    const server = createServer((sock) => {
      sock.on('error', () => sock.destroy());
      sock.write('hello\n');
      sock.pipe(sock);
    });
    listening.push(new Promise((resolve) => server.listen({ port, host: '::', ipv6Only: false }, resolve)));
  }
  for (const port of ports(flag(args, '--udp', ''))) {
    const sock = createSocket({ type: 'udp6', ipv6Only: false });
    sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
    listening.push(new Promise((resolve) => sock.bind(port, '::', resolve)));
  }
  await Promise.all(listening);
  process.stdout.write('ready\n');
}

function result(ok: boolean, started: number, error?: string): void {
  process.stdout.write(`${JSON.stringify({ ok, error, ms: Date.now() - started })}\n`);
}

function probeTcp(host: string, port: number, timeoutMs: number, bind: string | undefined): Promise<void> {
  const started = Date.now();
  return new Promise((resolve) => {
    const sock: Socket = connect({ host, port, localAddress: bind, timeout: timeoutMs });
    const done = (ok: boolean, error?: string) => {
      sock.destroy();
      result(ok, started, error);
      resolve();
    };
    sock.once('data', (d) =>
      done(d.toString().startsWith('hello'), d.toString().startsWith('hello') ? undefined : 'bad greeting'),
    );
    sock.once('timeout', () => done(false, 'ETIMEDOUT'));
    sock.once('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
  });
}

function probeUdp(host: string, port: number, timeoutMs: number, bind: string | undefined): Promise<void> {
  const started = Date.now();
  return new Promise((resolve) => {
    const sock = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    const timer = setTimeout(() => done(false, 'ETIMEDOUT'), timeoutMs);
    const done = (ok: boolean, error?: string) => {
      clearTimeout(timer);
      sock.close();
      result(ok, started, error);
      resolve();
    };
    sock.on('message', (msg) => done(msg.toString() === 'ping'));
    sock.on('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
    sock.bind({ address: bind, port: 0 }, () => sock.send('ping', port, host));
  });
}

async function sendUdp(host: string, port: number, count: number): Promise<void> {
  if (!(count > 0 && count <= 10_000)) throw new Error(`--count must be 1..10000, got ${count}`);
  const sock = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) =>
      sock.send(`burst ${i}`, port, host, (err) => (err ? reject(err) : resolve())),
    );
  }
  sock.close();
  process.stdout.write(`${JSON.stringify({ sent: count })}\n`);
}

function holdTcp(host: string, port: number, seconds: number): Promise<void> {
  if (!(seconds > 0 && seconds <= 60)) throw new Error(`--seconds must be 0..60, got ${seconds}`);
  const started = Date.now();
  let stopping = false;
  process.once('SIGTERM', () => (stopping = true));
  return new Promise((resolve) => {
    const sock = connect({ host, port, timeout: 2000 });
    let echoes = 0;
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const done = (ok: boolean, error?: string) => {
      clearInterval(timer);
      sock.destroy();
      process.stdout.write(`${JSON.stringify({ ok, error, echoes, ms: Date.now() - started })}\n`);
      resolve();
    };
    sock.once('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
    sock.once('timeout', () => done(false, `ETIMEDOUT after ${echoes} echoes`));
    sock.on('data', (d) => {
      echoes += d.toString().split('x').length - 1;
    });
    sock.once('connect', () => {
      process.stdout.write('connected\n');
      timer = setInterval(() => {
        if (echoes < sent) return done(false, `echo ${sent} missing`);
        if (stopping || Date.now() - started >= seconds * 1000) return done(true);
        sock.write('x');
        sent++;
      }, 200);
    });
  });
}

/** One UDP socket (one flow) that sends every 200 ms and wants each echo back before the next. */
function holdUdp(host: string, port: number, seconds: number): Promise<void> {
  if (!(seconds > 0 && seconds <= 60)) throw new Error(`--seconds must be 0..60, got ${seconds}`);
  const started = Date.now();
  let stopping = false;
  process.once('SIGTERM', () => (stopping = true));
  return new Promise((resolve) => {
    const sock = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    let echoes = 0;
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const done = (ok: boolean, error?: string) => {
      clearInterval(timer);
      sock.close();
      process.stdout.write(`${JSON.stringify({ ok, error, echoes, ms: Date.now() - started })}\n`);
      resolve();
    };
    sock.on('message', () => echoes++);
    sock.once('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
    sock.bind(0, () => {
      process.stdout.write('connected\n');
      const tick = () => {
        if (echoes < sent) return done(false, `echo ${sent} missing`);
        if (stopping || Date.now() - started >= seconds * 1000) return done(true);
        sock.send('x', port, host);
        sent++;
      };
      tick();
      timer = setInterval(tick, 200);
    });
  });
}

/** N queries with distinct (port, id): 8 sockets, ids counting up. */
async function queryFlood(server: string, count: number): Promise<void> {
  if (!(count > 0 && count <= 100_000)) throw new Error(`--count must be 1..100000, got ${count}`);
  const socks = await Promise.all(
    Array.from(
      { length: 8 },
      () =>
        new Promise<ReturnType<typeof createSocket>>((resolve) => {
          const s = createSocket(isIP(server) === 6 ? 'udp6' : 'udp4');
          s.bind(0, () => resolve(s));
        }),
    ),
  );
  for (let i = 0; i < count; i++) {
    const msg = dnsPacket.encode({
      type: 'query',
      id: (i >> 3) & 0xffff,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name: `q${i}.flood.test`, class: 'IN' }],
    });
    await new Promise<void>((resolve) => socks[i & 7]!.send(msg, 53, server, () => resolve()));
  }
  for (const s of socks) s.close();
  process.stdout.write(`${JSON.stringify({ sent: count })}\n`);
}

/** N distinct UDP flows: N sockets (N source ports), one datagram each. */
async function udpFlows(host: string, port: number, count: number): Promise<void> {
  if (!(count > 0 && count <= 5000)) throw new Error(`--count must be 1..5000, got ${count}`);
  for (let i = 0; i < count; i++) {
    const sock = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    await new Promise<void>((resolve) => sock.send(`flow ${i}`, port, host, () => resolve()));
    sock.close();
  }
  process.stdout.write(`${JSON.stringify({ flows: count })}\n`);
}

function sendDns(bind: string | undefined, bindPort: number, to: string, port: number, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(isIP(to) === 6 ? 'udp6' : 'udp4');
    sock.once('error', reject);
    sock.bind({ address: bind, port: bindPort }, () => {
      sock.send(msg, port, to, (err) => {
        sock.close();
        if (err) reject(err);
        else resolve();
      });
    });
  });
}

/** DNS over TCP whose every reply spans two segments: the kernel learner cannot take it whole. */
async function dnsTcpServe(bind: string, answer: string, split: number): Promise<void> {
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const query = dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        const q = query.questions![0]!;
        const type = isIP(answer) === 6 ? 'AAAA' : 'A';
        const msg = dnsPacket.encode({
          type: 'response',
          id: query.id,
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
          questions: [q],
          answers: [{ type, name: q.name, class: 'IN', ttl: 300, data: answer }],
        });
        const stream = Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);
        sock.write(stream.subarray(0, split));
        setTimeout(() => sock.write(stream.subarray(split)), 50);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: bind, port: 53 }, resolve);
  });
  process.stdout.write('ready\n');
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === 'serve') return serve(rest);
  if (cmd === 'probe') {
    const [proto, host, port] = rest;
    const timeoutMs = Number(flag(rest, '--timeout-ms', '1500'));
    const bind = rest.includes('--bind') ? flag(rest, '--bind', '') : undefined;
    if (!host || !port) throw new Error('usage: probe tcp|udp HOST PORT');
    if (proto === 'tcp') return probeTcp(host, Number(port), timeoutMs, bind);
    if (proto === 'udp') return probeUdp(host, Number(port), timeoutMs, bind);
  }
  if (cmd === 'hold' && rest[0] === 'tcp' && rest[1] && rest[2]) {
    return holdTcp(rest[1], Number(rest[2]), Number(flag(rest, '--seconds', '3')));
  }
  if (cmd === 'hold' && rest[0] === 'udp' && rest[1] && rest[2]) {
    return holdUdp(rest[1], Number(rest[2]), Number(flag(rest, '--seconds', '3')));
  }
  if (cmd === 'flows' && rest[0] === 'udp' && rest[1] && rest[2])
    return udpFlows(rest[1], Number(rest[2]), Number(flag(rest, '--count', '1')));
  if (cmd === 'query-flood' && rest[0]) return queryFlood(rest[0], Number(flag(rest, '--count', '1')));
  if (cmd === 'query' && rest[0] && rest[1]) {
    const type = flag(rest, '--type', 'A') as 'A' | 'AAAA';
    const msg = dnsPacket.encode({
      type: 'query',
      id: Number(flag(rest, '--id', '4242')),
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type, name: rest[1], class: 'IN' }],
    });
    return sendDns(undefined, Number(flag(rest, '--sport', '0')), rest[0], 53, msg);
  }
  if (cmd === 'forge') {
    const name = flag(rest, '--name', '');
    const answer = flag(rest, '--answer', '');
    const type = isIP(answer) === 6 ? 'AAAA' : 'A';
    const msg = dnsPacket.encode({
      type: 'response',
      id: Number(flag(rest, '--id', '0')),
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: [{ type, name, class: 'IN' }],
      answers: [{ type, name, class: 'IN', ttl: Number(flag(rest, '--ttl', '300')), data: answer }],
    });
    return sendDns(flag(rest, '--bind', ''), 53, flag(rest, '--to', ''), Number(flag(rest, '--port', '0')), msg);
  }
  if (cmd === 'dns-tcp-serve')
    return dnsTcpServe(flag(rest, '--bind', ''), flag(rest, '--answer', ''), Number(flag(rest, '--split', '10')));
  if (cmd === 'send' && rest[0] === 'udp' && rest[1] && rest[2]) {
    return sendUdp(rest[1], Number(rest[2]), Number(flag(rest, '--count', '1')));
  }
  throw new Error(`usage: nettool serve|probe ... (got "${process.argv.slice(2).join(' ')}")`);
}

main().catch((err: Error) => {
  process.stderr.write(`nettool: ${err.message}\n`);
  process.exit(2);
});
