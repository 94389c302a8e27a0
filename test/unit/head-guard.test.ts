/*
 * The tcx head guard against a fake kernel (chains as arrays, a fake clock):
 * when it takes the head back, when it leaves an interface alone, how it
 * backs off from a program that keeps going first and comes back after the
 * back-off, what it records, and that it forgets interfaces that are not
 * enforced any more. No root needed; the kernel side is in tcx.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TcxHeadGuard, type GuardedInterface, type HookOps } from '../../agent/datapath/head-guard.js';
import { headGuardRecordCodec, type HeadGuardRecord } from '../../agent/datapath/head-guard-map.js';
import type { Direction } from '../../agent/datapath/attach.js';
import type { Logger } from '../../agent/observability/log.js';

const MS = 1_000_000n;
const OURS = { ingress: 900, egress: 901 } as const;

/** Chains of [progId, linkId], our link first unless a test says otherwise. */
class FakeKernel implements HookOps {
  readonly chains = new Map<string, Array<[number, number]>>();
  nextLink = 5000;
  retakes = 0;
  refuse = false;

  private key(ifindex: number, direction: Direction): string {
    return `${ifindex}/${direction}`;
  }
  attachOurs(ifindex: number): void {
    for (const d of ['ingress', 'egress'] as const) this.chains.set(this.key(ifindex, d), [[OURS[d], this.nextLink++]]);
  }
  /** another program goes first (BPF_F_BEFORE) */
  goFirst(ifindex: number, direction: Direction, progId: number): void {
    this.chains.get(this.key(ifindex, direction))!.unshift([progId, 0]);
  }
  ourPosition(ifindex: number, direction: Direction): number {
    return this.chains.get(this.key(ifindex, direction))!.findIndex(([p]) => p === OURS[direction]);
  }
  chain(ifindex: number, direction: Direction) {
    const c = this.chains.get(this.key(ifindex, direction)) ?? [];
    return { progIds: c.map(([p]) => p), linkIds: c.map(([, l]) => l), revision: 1 };
  }
  ownLinkId(ifindex: number, direction: Direction): number | null {
    return this.chains.get(this.key(ifindex, direction))?.find(([p]) => p === OURS[direction])?.[1] ?? null;
  }
  retake(ifindex: number, direction: Direction): number {
    if (this.refuse) throw new Error('bpf_link_create: Argument list too long (E2BIG)');
    const c = this.chains.get(this.key(ifindex, direction))!;
    const link = this.nextLink++;
    c.unshift([OURS[direction], link]);
    c.splice(
      c.findIndex(([p, l]) => p === OURS[direction] && l !== link),
      1,
    );
    this.retakes++;
    return link;
  }
}

function recordingLog(): {
  log: Logger;
  lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }>;
} {
  const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => lines.push({ level, msg, fields });
  return {
    log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger,
    lines,
  };
}

const POD: GuardedInterface = { ifindex: 7, ifname: 'veth-pay', namespace: 'shop', name: 'payments' };

function setup(opts: { maxRetakes?: number; windowMs?: number; backoffMs?: number } = {}) {
  const kernel = new FakeKernel();
  kernel.attachOurs(POD.ifindex);
  const records = new Map<number, HeadGuardRecord>();
  const { log, lines } = recordingLog();
  const clock = { ns: 1_000_000_000n };
  const retakes: string[] = [];
  const backoffs: Array<{ pod: string; attempts: number; ahead: number[] }> = [];
  const guard = new TcxHeadGuard({
    ops: kernel,
    log,
    records,
    nowNs: () => clock.ns,
    maxRetakes: opts.maxRetakes ?? 3,
    windowMs: opts.windowMs ?? 10_000,
    backoffMs: opts.backoffMs ?? 60_000,
    events: {
      onRetake: (iface, direction) => retakes.push(`${iface.ifname}/${direction}`),
      onBackoff: (iface, r) =>
        backoffs.push({ pod: `${iface.namespace}/${iface.name}`, attempts: r.attempts, ahead: r.ahead }),
    },
  });
  const advance = (ms: number) => (clock.ns += BigInt(ms) * MS);
  return { kernel, records, lines, clock, guard, retakes, backoffs, advance };
}

test('ours at the head: nothing to do, nothing recorded', () => {
  const { kernel, guard, records, lines } = setup();
  kernel.chains.get('7/ingress')!.push([42, 0]); // a CNI program after ours is fine
  assert.equal(guard.check([POD]), 0);
  assert.equal(kernel.retakes, 0);
  assert.equal(guard.contested(), 0);
  assert.deepEqual([...records.values()], []);
  assert.deepEqual(
    lines.filter((l) => l.level !== 'debug'),
    [],
  );
});

test('a program that went before ours loses the head at the next pass, logged, counted and recorded', () => {
  const { kernel, guard, records, lines, retakes, clock } = setup();
  guard.check([POD]);
  kernel.goFirst(7, 'ingress', 42);
  assert.equal(kernel.ourPosition(7, 'ingress'), 1);
  assert.equal(guard.check([POD]), 1);
  assert.equal(kernel.ourPosition(7, 'ingress'), 0, 'ours first again');
  assert.deepEqual(kernel.chain(7, 'ingress').progIds, [OURS.ingress, 42], 'the other program stays, after ours');
  assert.deepEqual(retakes, ['veth-pay/ingress']);
  const warn = lines.find((l) => l.level === 'warn')!;
  assert.match(warn.msg, /another tcx program went before ours: took the head of the chain back/);
  assert.deepEqual(
    {
      pod: warn.fields.pod,
      interface: warn.fields.interface,
      direction: warn.fields.direction,
      ahead: warn.fields.ahead,
    },
    { pod: 'shop/payments', interface: 'veth-pay', direction: 'ingress', ahead: [42] },
  );
  assert.deepEqual(records.get(7), {
    retakes: 1,
    lastRetakeNs: clock.ns,
    backoffUntilNs: 0n,
    aheadProgId: 42,
    backoffs: 0,
  });
  assert.equal(guard.check([POD]), 0, 'the new link is known as ours: no second retake');
});

test('an interface where ours is not a tcx link (legacy, not attached, gone) is left alone', () => {
  const { kernel, guard } = setup();
  const legacy: GuardedInterface = { ifindex: 8, ifname: 'veth-legacy', namespace: 'shop', name: 'old' };
  kernel.chains.set('8/ingress', [[42, 0]]); // only a CNI program in the chain; ours is a legacy filter
  const gone: GuardedInterface = { ifindex: 9, ifname: 'veth-gone', namespace: 'shop', name: 'gone' };
  const throwing: HookOps = {
    ...kernel,
    chain: (i, d) => {
      if (i === 9) throw new Error('ENODEV');
      return kernel.chain(i, d);
    },
    ownLinkId: (i, d) => kernel.ownLinkId(i, d),
    retake: (i, d) => kernel.retake(i, d),
  };
  const g = new TcxHeadGuard({ ops: throwing, log: recordingLog().log });
  assert.equal(g.check([POD, legacy, gone]), 0);
  assert.equal(guard.check([legacy]), 0);
  assert.equal(kernel.retakes, 0);
});

test('a program that keeps going first: retaken up to the limit, then a back-off (error, one report), then guarded again', () => {
  const { kernel, guard, records, lines, backoffs, advance, clock } = setup({
    maxRetakes: 3,
    windowMs: 10_000,
    backoffMs: 60_000,
  });
  for (let i = 0; i < 3; i++) {
    kernel.goFirst(7, 'ingress', 42);
    assert.equal(guard.check([POD]), 1, `retake ${i + 1}`);
    advance(1000);
  }
  kernel.goFirst(7, 'ingress', 42);
  assert.equal(guard.check([POD]), 0, 'the fourth within the window is not taken back');
  assert.equal(kernel.ourPosition(7, 'ingress'), 1);
  assert.equal(guard.contested(), 1);
  assert.deepEqual(backoffs, [{ pod: 'shop/payments', attempts: 4, ahead: [42] }]);
  const error = lines.filter((l) => l.level === 'error');
  assert.equal(error.length, 1);
  assert.match(error[0]!.msg, /KEEPS TAKING THE HEAD/);
  assert.deepEqual(records.get(7), {
    retakes: 3,
    lastRetakeNs: clock.ns - 1000n * MS,
    backoffUntilNs: clock.ns + 60_000n * MS,
    aheadProgId: 42,
    backoffs: 1,
  });

  // Passes during the back-off do nothing and report nothing more.
  for (let i = 0; i < 20; i++) {
    advance(250);
    assert.equal(guard.check([POD]), 0);
  }
  assert.equal(backoffs.length, 1, 'one report per back-off');
  assert.equal(lines.filter((l) => l.level === 'error').length, 1);

  advance(60_000);
  assert.equal(guard.check([POD]), 1, 'after the back-off the head is taken back');
  assert.equal(kernel.ourPosition(7, 'ingress'), 0);
  assert.ok(lines.some((l) => l.msg.includes('back-off over')));
  assert.equal(records.get(7)!.backoffUntilNs, 0n);
  assert.equal(guard.contested(), 0, 'ours first again');
});

test('retakes spread over more than the window never back off', () => {
  const { kernel, guard, backoffs, advance } = setup({ maxRetakes: 2, windowMs: 1000 });
  for (let i = 0; i < 10; i++) {
    kernel.goFirst(7, i % 2 ? 'egress' : 'ingress', 42 + i);
    assert.equal(guard.check([POD]), 1);
    advance(600);
  }
  assert.equal(kernel.retakes, 10);
  assert.deepEqual(backoffs, []);
});

test('a kernel that keeps refusing our new link ends in a back-off, not a loop', () => {
  const { kernel, guard, backoffs, lines } = setup({ maxRetakes: 3 });
  kernel.goFirst(7, 'ingress', 42);
  kernel.refuse = true;
  for (let i = 0; i < 10; i++) guard.check([POD]);
  assert.equal(lines.filter((l) => l.msg.includes('could not take the head')).length, 3);
  assert.equal(backoffs.length, 1);
});

test('a restarted agent (a new guard on the same records) keeps counting and keeps backing off', () => {
  const { kernel, guard, records, advance, clock } = setup({ maxRetakes: 1, backoffMs: 60_000 });
  kernel.goFirst(7, 'ingress', 42);
  guard.check([POD]);
  kernel.goFirst(7, 'ingress', 42);
  guard.check([POD]);
  assert.ok(records.get(7)!.backoffUntilNs > clock.ns, 'backing off');
  advance(1000);
  const { log } = recordingLog();
  const restarted = new TcxHeadGuard({
    ops: kernel,
    log,
    records,
    nowNs: () => clock.ns,
    maxRetakes: 1,
    backoffMs: 60_000,
  });
  assert.equal(restarted.check([POD]), 0, 'the back-off holds across the restart');
  assert.equal(kernel.ourPosition(7, 'ingress'), 1);
  advance(60_000);
  assert.equal(restarted.check([POD]), 1);
  assert.equal(records.get(7)!.retakes, 2, 'counted on');
});

test('interfaces that are not enforced any more are forgotten, with their records; another pod on the ifindex starts afresh', () => {
  const { kernel, guard, records } = setup();
  records.set(99, { retakes: 4, lastRetakeNs: 1n, backoffUntilNs: 0n, aheadProgId: 1, backoffs: 0 }); // an earlier agent's pod, gone
  kernel.goFirst(7, 'ingress', 42);
  guard.check([POD]);
  assert.deepEqual([...records.keys()], [7], "the gone interface's record is dropped at the first pass");
  const other = { ...POD, name: 'checkout' };
  kernel.goFirst(7, 'ingress', 42);
  guard.check([other]);
  assert.equal(records.get(7)!.retakes, 1, 'counted from zero for the new pod');
  guard.check([]);
  assert.equal(records.size, 0);
});

test('fqe_head_guard records round-trip through their codec', () => {
  const r: HeadGuardRecord = {
    retakes: 7,
    lastRetakeNs: 123_456_789_012n,
    backoffUntilNs: 2n ** 63n + 5n,
    aheadProgId: 4242,
    backoffs: 3,
  };
  const b = headGuardRecordCodec.encode(r);
  assert.equal(b.length, 32);
  assert.deepEqual(headGuardRecordCodec.decode(b), r);
});

test('an unexpected error reading a chain is logged once, and the other interfaces are still guarded', () => {
  const { kernel, records } = setup();
  const { log, lines } = recordingLog();
  const other: GuardedInterface = { ifindex: 8, ifname: 'veth-other', namespace: 'shop', name: 'other' };
  kernel.attachOurs(8);
  const ops: HookOps = {
    chain: (i, d) => kernel.chain(i, d),
    ownLinkId: (i, d) => {
      if (i === 7) throw new Error('bpf_obj_get(link_7_ingress): Permission denied (EACCES)');
      return kernel.ownLinkId(i, d);
    },
    retake: (i, d) => kernel.retake(i, d),
  };
  const guard = new TcxHeadGuard({ ops, log, records });
  kernel.goFirst(7, 'ingress', 42);
  kernel.goFirst(8, 'ingress', 42);
  for (let i = 0; i < 5; i++) guard.check([POD, other]);
  assert.equal(kernel.ourPosition(8, 'ingress'), 0, 'the other interface is guarded');
  assert.equal(lines.filter((l) => l.msg.includes('could not check the chains')).length, 1, 'said once');
});
