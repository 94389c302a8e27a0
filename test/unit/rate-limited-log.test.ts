/*
 * Rejected DNS messages are logged at most N lines per kind and window; the
 * rest are counted in one line when the next window opens.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimitedLog, type Logger } from '../../agent/observability/log.js';

test('a flood of one kind logs a bounded number of lines, then says how many were suppressed', () => {
  const lines: Array<[Record<string, unknown>, string]> = [];
  const fake = {
    info: (fields: Record<string, unknown>, msg: string) => lines.push([fields, msg]),
  } as unknown as Logger;
  let t = 0;
  const log = new RateLimitedLog(fake, 3, 1000, () => t);
  for (let i = 0; i < 10_000; i++) log.info('rejected-malformed', { i }, 'DNS answer rejected');
  log.info('rejected-unsolicited', { i: -1 }, 'DNS answer rejected');
  assert.equal(lines.length, 4, 'three of the flood, one of another kind');
  t = 1000;
  log.info('rejected-malformed', { i: 0 }, 'DNS answer rejected');
  assert.deepEqual(lines[4]![0], { kind: 'rejected-malformed', suppressed: 9997, windowMs: 1000 });
  assert.equal(lines.length, 6);
});

test('warn lines are limited the same way, each kind on its own', () => {
  const lines: string[] = [];
  const fake = { warn: (_f: Record<string, unknown>, msg: string) => lines.push(msg) } as unknown as Logger;
  let t = 0;
  const log = new RateLimitedLog(fake, 2, 1000, () => t);
  for (let i = 0; i < 100; i++) log.warn('names-over-cap', { i }, 'name refused');
  assert.equal(lines.length, 2);
  t = 1000;
  log.warn('names-over-cap', {}, 'name refused');
  assert.deepEqual(lines.slice(2), ['name refused: more lines of this kind were suppressed', 'name refused']);
});
