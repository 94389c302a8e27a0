/*
 * A tiny real client and server for tests, run inside a test's network
 * namespaces (ip netns exec NS node dist/test/helpers/nettool.js ...).
 *   serve --tcp 80,443 --udp 5353       listen on [::] (dual stack); print "ready"
 *   probe tcp|udp HOST PORT [--timeout-ms N] [--bind ADDR]
 *                                        print one JSON line {ok, error?, ms}
 *   send udp HOST PORT --count N         send N datagrams (at most 10000), no reply awaited
 * TCP server: greets with "hello\n" and echoes. UDP server: echoes.
 */
import { createServer, connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';

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
    sock.once('data', (d) => done(d.toString().startsWith('hello'), d.toString().startsWith('hello') ? undefined : 'bad greeting'));
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
    await new Promise<void>((resolve, reject) => sock.send(`burst ${i}`, port, host, (err) => (err ? reject(err) : resolve())));
  }
  sock.close();
  process.stdout.write(`${JSON.stringify({ sent: count })}\n`);
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
  if (cmd === 'send' && rest[0] === 'udp' && rest[1] && rest[2]) {
    return sendUdp(rest[1], Number(rest[2]), Number(flag(rest, '--count', '1')));
  }
  throw new Error(`usage: nettool serve|probe ... (got "${process.argv.slice(2).join(' ')}")`);
}

main().catch((err: Error) => {
  process.stderr.write(`nettool: ${err.message}\n`);
  process.exit(2);
});
