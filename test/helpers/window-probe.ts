/*
 * The enforcement window's probe (bench/cni-window.bench.ts), two halves:
 *   send: inside a pod's namespace, started before its interface exists: a
 *     UDP packet to a destination the pod may not reach every millisecond,
 *     carrying the probe's id and its send time (CLOCK_MONOTONIC ns, the
 *     clock all processes on the machine share); sends fail until the CNI
 *     plugin brings the interface up. Prints "ready", then one JSON line with
 *     the first send that left. Bounded: --cap-ms after that first send,
 *     --max-ms overall.
 *   sink: in the outside namespace, bound to that destination: prints
 *     "p <id> <send ns>" for every packet that arrived (passed the enforcer),
 *     so no reply path is needed.
 *   node window-probe.js send --id N --to IP --port N --cap-ms MS --max-ms MS
 *   node window-probe.js sink --bind IP --port N
 */
import { createSocket } from 'node:dgram';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) throw new Error(`window-probe: --${name} is required`);
  return v;
}

const port = Number(arg('port'));
const sock = createSocket('udp4');

if (process.argv[2] === 'sink') {
  sock.on('message', (msg) => {
    if (msg.length >= 12) process.stdout.write(`p ${msg.readUInt32BE(8)} ${msg.readBigUInt64BE(0)}\n`);
  });
  sock.bind(port, arg('bind'), () => console.log('ready'));
} else {
  const to = arg('to');
  const id = Number(arg('id'));
  const capNs = BigInt(arg('cap-ms', '3000')) * 1_000_000n;
  const maxNs = BigInt(arg('max-ms', '30000')) * 1_000_000n;
  const started = process.hrtime.bigint();
  let firstSentNs: bigint | undefined;
  sock.on('error', () => undefined);
  const timer = setInterval(() => {
    const now = process.hrtime.bigint();
    if ((firstSentNs !== undefined && now - firstSentNs > capNs) || now - started > maxNs) {
      clearInterval(timer);
      sock.close();
      console.log(JSON.stringify({ firstSentNs: firstSentNs?.toString() ?? null }));
      return;
    }
    const b = Buffer.alloc(12);
    b.writeBigUInt64BE(now, 0);
    b.writeUInt32BE(id, 8);
    sock.send(b, port, to, (err) => {
      if (!err && firstSentNs === undefined) firstSentNs = now;
    });
  }, 1);
  console.log('ready');
}
