/*
 * A load of many concurrent clients in one process, run in a pod namespace
 * (ip netns exec NS node dist/test/helpers/dns-connect-load.js ...): each of
 * --clients loops resolves a name over UDP (its own query, id and port) and
 * connects at once to the first A of the answer, then resets the connection
 * (no TIME_WAIT pile-up) and waits --pause-ms. Names are read from a file,
 * one a line; each loop walks them from its own offset.
 * Bounded: stops starting iterations after --seconds; every query and
 * connect has its own timeout. Prints one JSON line with the counts:
 * {iterations, dnsOk, dnsFailed, connectOk, connectFailed, slowConnects,
 *  failures: [first few, with the time they happened]}.
 *
 *   --resolver IP --names FILE --port P --clients N --seconds S
 *   [--pause-ms MS] [--timeout-ms MS] [--slow-ms MS]
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';

function flag(name: string, fallback?: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) throw new Error(`missing ${name}`);
  return v;
}

const resolver = flag('--resolver');
const names = readFileSync(flag('--names'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '');
const port = Number(flag('--port', '80'));
const clients = Math.min(1000, Number(flag('--clients', '200')));
const seconds = Math.min(600, Number(flag('--seconds', '10')));
const pauseMs = Number(flag('--pause-ms', '100'));
const timeoutMs = Number(flag('--timeout-ms', '2000'));
const slowMs = Number(flag('--slow-ms', '500'));

const stats = {
  iterations: 0,
  dnsOk: 0,
  dnsFailed: 0,
  connectOk: 0,
  connectFailed: 0,
  slowConnects: 0,
  failures: [] as Array<{ atMs: number; what: string }>,
};
const started = Date.now();

function fail(what: string): void {
  if (stats.failures.length < 20) stats.failures.push({ atMs: Date.now() - started, what });
}

function resolve(name: string): Promise<string | undefined> {
  return new Promise((done) => {
    const sock = createSocket('udp4');
    const id = Math.floor(Math.random() * 65536);
    const timer = setTimeout(() => finish(undefined, `dns timeout ${name}`), timeoutMs);
    let finished = false;
    function finish(ip: string | undefined, why?: string): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.close();
      if (why) fail(why);
      done(ip);
    }
    sock.on('error', (err) => finish(undefined, `dns ${name}: ${err.message}`));
    sock.on('message', (msg) => {
      try {
        const a = dnsPacket.decode(msg);
        if (a.id !== id) return;
        const rec = a.answers?.find((r) => r.type === 'A') as { data: string } | undefined;
        finish(rec?.data, rec ? undefined : `dns ${name}: no A record in the answer`);
      } catch (err) {
        finish(undefined, `dns ${name}: ${(err as Error).message}`);
      }
    });
    sock.send(
      dnsPacket.encode({
        type: 'query',
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'A', name, class: 'IN' }],
      }),
      53,
      resolver,
    );
  });
}

function tcpConnect(ip: string): Promise<{ ok: boolean; ms: number }> {
  const t0 = Date.now();
  return new Promise((done) => {
    const sock = connect({ host: ip, port, timeout: timeoutMs });
    let finished = false;
    const finish = (ok: boolean, why?: string) => {
      if (finished) return;
      finished = true;
      if (ok) sock.resetAndDestroy();
      else sock.destroy();
      if (why) fail(`connect ${ip}:${port}: ${why}`);
      done({ ok, ms: Date.now() - t0 });
    };
    sock.once('connect', () => finish(true));
    sock.once('timeout', () => finish(false, 'timeout'));
    sock.once('error', (err) => finish(false, err.message));
  });
}

async function loop(index: number): Promise<void> {
  let i = (index * 7919) % names.length;
  // Spread the loops' starts over one pause so they do not fire in lockstep.
  await new Promise((r) => setTimeout(r, Math.random() * pauseMs));
  while (Date.now() - started < seconds * 1000) {
    const name = names[i++ % names.length]!;
    stats.iterations++;
    const ip = await resolve(name);
    if (ip === undefined) {
      stats.dnsFailed++;
    } else {
      stats.dnsOk++;
      const c = await tcpConnect(ip);
      if (c.ok) stats.connectOk++;
      else stats.connectFailed++;
      if (c.ok && c.ms >= slowMs) {
        stats.slowConnects++;
        fail(`slow connect to ${ip} (${c.ms} ms: a dropped SYN retransmitted?)`);
      }
    }
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

await Promise.all(Array.from({ length: clients }, (_, i) => loop(i)));
process.stdout.write(`${JSON.stringify({ clients, seconds, ...stats })}\n`);
