/* Unit tests of the FQDN cache (pure, fake clock). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FqdnCache } from '../../agent/cache/fqdn-cache.js';

function clock(start = 1000) {
  const c = { t: start, now: () => c.t };
  return c;
}

test('learn records IPs per pod and name with their expiry', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, now: c.now });
  const changes = cache.learn(
    1,
    'api.stripe.test',
    [
      { ip: '203.0.113.10', ttlMs: 5000 },
      { ip: '2001:db8:ff::10', ttlMs: 3000 },
    ],
    'agent',
  );
  assert.deepEqual(changes.map((x) => x.ip).sort(), ['2001:db8:ff::10', '203.0.113.10']);
  assert.equal(cache.size, 2);
  assert.deepEqual(cache.view(1, '203.0.113.10'), {
    ip: '203.0.113.10',
    expiresAtMs: 6000,
    name: 'api.stripe.test',
    names: ['api.stripe.test'],
    learnedBy: 'agent',
    entries: [{ name: 'api.stripe.test', expiresAtMs: 6000, learnedBy: 'agent' }],
  });
  assert.equal(cache.view(2, '203.0.113.10'), undefined, 'pods are separate');
});

test('an IP answered for two names expires with the later one', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, now: c.now });
  cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 1000 }], 'agent');
  cache.learn(1, 'b.test', [{ ip: '203.0.113.1', ttlMs: 5000 }], 'kernel');
  assert.equal(cache.view(1, '203.0.113.1')!.name, 'b.test');
  c.t += 2000;
  const expired = cache.expire();
  assert.deepEqual(expired, [{ identity: 1, ip: '203.0.113.1' }]);
  assert.deepEqual(cache.view(1, '203.0.113.1')!.names, ['b.test']);
  c.t += 4000;
  cache.expire();
  assert.equal(cache.view(1, '203.0.113.1'), undefined);
  assert.equal(cache.size, 0);
});

test('a shorter answer never shortens what a longer one granted', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, now: c.now });
  cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 10_000 }], 'agent');
  assert.deepEqual(cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 1000 }], 'agent'), []);
  assert.equal(cache.view(1, '203.0.113.1')!.expiresAtMs, 11_000);
});

test('max IPs per name evicts the least recently answered', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 2, now: c.now });
  cache.learn(1, 'lb.test', [{ ip: '203.0.113.1', ttlMs: 60_000 }], 'agent');
  c.t += 1;
  cache.learn(1, 'lb.test', [{ ip: '203.0.113.2', ttlMs: 60_000 }], 'agent');
  c.t += 1;
  cache.learn(1, 'lb.test', [{ ip: '203.0.113.1', ttlMs: 60_000 }], 'agent'); // answered again: now the newest
  c.t += 1;
  const changes = cache.learn(1, 'lb.test', [{ ip: '203.0.113.3', ttlMs: 60_000 }], 'agent');
  assert.deepEqual(cache.ipsOf(1).sort(), ['203.0.113.1', '203.0.113.3']);
  assert.ok(
    changes.some((x) => x.ip === '203.0.113.2'),
    'the eviction is reported as a change',
  );
  assert.throws(() => new FqdnCache({ maxIpsPerName: 0, now: c.now }), /at least 1/);
});

test('a 4,000-address answer with max 100 keeps its last 100 addresses and reports every eviction', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 100, now: c.now });
  const ip = (i: number) => `198.18.${i >> 8}.${i & 0xff}`;
  cache.learn(1, 'big.test', [{ ip: '203.0.113.1', ttlMs: 60_000 }], 'agent');
  c.t += 1;
  const answers = Array.from({ length: 4000 }, (_, i) => ({ ip: ip(i), ttlMs: 60_000 }));
  const changes = cache.learn(1, 'big.test', answers, 'agent');
  assert.equal(cache.size, 100);
  assert.deepEqual(
    cache.ipsOf(1).sort(),
    answers
      .slice(3900)
      .map((a) => a.ip)
      .sort(),
    'the last 100 of the answer stay',
  );
  assert.equal(cache.view(1, '203.0.113.1'), undefined, 'the older answer went first');
  const changed = new Set(changes.map((x) => x.ip));
  assert.ok(
    changed.has('203.0.113.1') && answers.every((a) => changed.has(a.ip)),
    'each eviction is a change for the reconciler',
  );
  // answered again: an IP moves to the back of the line
  c.t += 1;
  cache.learn(1, 'big.test', [{ ip: ip(3900), ttlMs: 60_000 }], 'agent');
  cache.learn(1, 'big.test', [{ ip: '203.0.113.2', ttlMs: 60_000 }], 'agent');
  assert.ok(cache.holds(1, 'big.test', ip(3900)), 'refreshed: kept');
  assert.ok(!cache.holds(1, 'big.test', ip(3901)), 'now the least recently answered: evicted');
});

test('names per pod are capped: a new name past the cap is refused, known names still refresh', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, maxNamesPerPod: 2, now: c.now });
  cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 5000 }], 'agent');
  cache.learn(1, 'b.test', [{ ip: '203.0.113.2', ttlMs: 5000 }], 'agent');
  assert.equal(cache.admits(1, 'c.test'), false);
  assert.equal(cache.admits(1, 'a.test'), true, 'a name it holds');
  assert.equal(cache.admits(2, 'c.test'), true, 'another pod has its own cap');
  assert.deepEqual(
    cache.learn(1, 'c.test', [{ ip: '203.0.113.3', ttlMs: 5000 }], 'agent'),
    [],
    'refused: nothing cached',
  );
  assert.deepEqual(cache.restore(1, 'c.test', '203.0.113.3', 9000, 'kernel'), []);
  assert.equal(cache.view(1, '203.0.113.3'), undefined);
  assert.equal(
    cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 9000 }], 'agent').length,
    1,
    'a known name still refreshes',
  );
  c.t += 6000;
  cache.expire();
  assert.equal(cache.admits(1, 'c.test'), true, 'room again once b.test expired');
  assert.throws(
    () => new FqdnCache({ maxIpsPerName: 1, maxNamesPerPod: 0, now: c.now }),
    /maxNamesPerPod must be at least 1/,
  );
});

test('forgetNames and forgetIdentity remove what policy no longer allows', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, now: c.now });
  cache.learn(1, 'a.test', [{ ip: '203.0.113.1', ttlMs: 5000 }], 'agent');
  cache.learn(1, 'b.test', [{ ip: '203.0.113.2', ttlMs: 5000 }], 'agent');
  cache.learn(2, 'a.test', [{ ip: '203.0.113.1', ttlMs: 5000 }], 'agent');
  assert.deepEqual(
    cache.forgetNames(1, (n) => n !== 'a.test'),
    [{ identity: 1, ip: '203.0.113.1' }],
  );
  assert.deepEqual(cache.ipsOf(1), ['203.0.113.2']);
  assert.deepEqual(cache.forgetIdentity(2), [{ identity: 2, ip: '203.0.113.1' }]);
  assert.equal(cache.size, 1);
  assert.deepEqual(cache.identities(), [1]);
});

test('restore puts back unexpired entries only', () => {
  const c = clock();
  const cache = new FqdnCache({ maxIpsPerName: 10, now: c.now });
  assert.equal(cache.restore(1, 'a.test', '203.0.113.1', 500, 'kernel').length, 0, 'already expired');
  assert.equal(cache.restore(1, 'a.test', '203.0.113.2', 5000, 'kernel').length, 1);
  assert.equal(cache.view(1, '203.0.113.2')!.learnedBy, 'kernel');
});
