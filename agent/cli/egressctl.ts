#!/usr/bin/env node
/*
 * egressctl: what fqdn-egress allows and drops on this node, read from the
 * pinned maps (it works while the agent is down).
 *   egressctl inspect [--pod NS/NAME] [--output table|json] [--pin-dir DIR]
 *   egressctl policies [--pod NS/NAME] [--output table|json] [--pin-dir DIR]
 *   egressctl drops   [--follow] [--pod NS/NAME] [--limit N] [--output table|json] [--pin-dir DIR]
 *   egressctl status  [--output table|json] [--pin-dir DIR]
 * Exit codes: 0 fine, 1 cannot read the state, 2 bad usage.
 */
import { DEFAULT_PIN_DIR } from '../datapath/datapath.js';
import { CliError, inspect, openState, recentDrops, status } from './state.js';
import { dropRows, renderInspect, renderPolicies, renderStatus, type Style } from './render.js';

const USAGE = `Usage: egressctl <command> [flags]

Commands:
  inspect   per enforced pod: identity, interface, mode, what decides its rules,
            allowed names with ports and where each came from (annotation,
            policy NS/NAME, clusterpolicy NAME), every allowed IP with the name
            it was answered for, who learned it and the time left, and
            connections that outlive their IP's TTL
  policies  per enforced pod: the policy resources that select it (or its
            annotation), and whether its annotation is ignored
  drops     recent drop and audit events: time, pod, destination, port, protocol,
            reason, and the name the destination was last answered for
  status    agent up or down, the datapath's feature states (and what a fallback
            means), programs attached per interface (tcx or legacy, how often the
            head guard took the chain back, a WARNING when another program runs
            before ours), map fill, counters

Flags:
  --pod NS/NAME        only this pod (inspect, policies, drops)
  --output table|json  default: table
  --follow             drops: keep printing new events until interrupted
  --limit N            drops: at most the last N events (default 50)
  --pin-dir DIR        where the agent pins its maps (default ${DEFAULT_PIN_DIR})
  --help               this text`;

class UsageError extends Error {}

interface Args {
  command: string;
  pod: string | undefined;
  output: 'table' | 'json';
  follow: boolean;
  limit: number;
  pinDir: string;
}

function parseArgs(argv: string[]): Args | 'help' {
  const args: Args = {
    command: '',
    pod: undefined,
    output: 'table',
    follow: false,
    limit: 50,
    pinDir: process.env.FQDN_EGRESS_BPF_PIN_DIR ?? DEFAULT_PIN_DIR,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--help' || a === '-h') return 'help';
    else if (a === '--pod') {
      const v = value();
      if (!/^[^/\s]+\/[^/\s]+$/.test(v)) throw new UsageError(`--pod: "${v}" is not NAMESPACE/NAME`);
      args.pod = v;
    } else if (a === '--output' || a === '-o') {
      const v = value();
      if (v !== 'table' && v !== 'json') throw new UsageError(`--output: "${v}" is not table or json`);
      args.output = v;
    } else if (a === '--follow' || a === '-f') args.follow = true;
    else if (a === '--limit') {
      const v = value();
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--limit: "${v}" is not a positive whole number`);
      args.limit = Number(v);
    } else if (a === '--pin-dir') args.pinDir = value();
    else if (a.startsWith('-')) throw new UsageError(`unknown flag ${a}`);
    else if (!args.command) args.command = a;
    else throw new UsageError(`unexpected argument "${a}"`);
  }
  if (!['inspect', 'policies', 'drops', 'status'].includes(args.command)) {
    throw new UsageError(
      args.command ? `unknown command "${args.command}"` : 'a command is needed: inspect, policies, drops or status',
    );
  }
  if (args.follow && args.command !== 'drops') throw new UsageError('--follow goes with drops');
  return args;
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2);
}

async function follow(args: Args, style: Style, afterSeq: number): Promise<never> {
  const stop = new Promise<void>((resolve) => process.once('SIGINT', resolve));
  let last = afterSeq;
  for (;;) {
    const dp = openState(args.pinDir);
    try {
      const fresh = recentDrops(dp, { afterSeq: last, ...(args.pod ? { pod: args.pod } : {}) });
      for (const d of fresh) {
        process.stdout.write(args.output === 'json' ? `${JSON.stringify(d)}\n` : `${dropRows([d], style, false)}\n`);
        last = Math.max(last, d.seq);
      }
    } finally {
      dp.close();
    }
    const stopped = await Promise.race([
      stop.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 250)),
    ]);
    if (stopped) process.exit(0);
  }
}

async function main(): Promise<number> {
  let args: Args | 'help';
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`egressctl: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const style: Style = { color: args.output === 'table' && process.stdout.isTTY === true && !process.env.NO_COLOR };
  const dp = openState(args.pinDir);
  try {
    if (args.command === 'inspect') {
      const pods = inspect(dp, args.pod);
      if (args.pod && pods.length === 0) throw new CliError(`pod ${args.pod} is not enforced on this node`);
      process.stdout.write(`${args.output === 'json' ? json({ pods }) : renderInspect(pods, style)}\n`);
    } else if (args.command === 'policies') {
      const pods = inspect(dp, args.pod).map(({ namespace, name, decidedBy, annotationIgnored, mode }) => ({
        namespace,
        name,
        mode,
        decidedBy,
        annotationIgnored,
      }));
      if (args.pod && pods.length === 0) throw new CliError(`pod ${args.pod} is not enforced on this node`);
      process.stdout.write(`${args.output === 'json' ? json({ pods }) : renderPolicies(pods, style)}\n`);
    } else if (args.command === 'status') {
      const s = status(dp);
      process.stdout.write(`${args.output === 'json' ? json(s) : renderStatus(s, style)}\n`);
    } else {
      const drops = recentDrops(dp, args.pod ? { pod: args.pod } : {}).slice(-args.limit);
      if (args.output === 'json' && !args.follow) process.stdout.write(`${json({ drops })}\n`);
      else if (args.output === 'json') for (const d of drops) process.stdout.write(`${JSON.stringify(d)}\n`);
      else
        process.stdout.write(`${drops.length === 0 ? 'no drop or audit events recorded' : dropRows(drops, style)}\n`);
      if (args.follow) {
        const lastSeq = drops.length ? drops[drops.length - 1]!.seq : Math.max(0, ...recentDrops(dp).map((d) => d.seq));
        dp.close();
        return follow(args, style, lastSeq);
      }
    }
  } finally {
    dp.close();
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`egressctl: ${err instanceof CliError ? err.message : (err.stack ?? err.message)}\n`);
    process.exit(1);
  },
);
