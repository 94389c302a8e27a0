/*
 * dnsmasq's query log, read by tests that must show what the resolver
 * received (--log-queries --log-facility=FILE): a name it was asked for
 * appears as "query[TYPE] NAME from ADDR". Pure apart from reading the file.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The lines of the log in which the resolver was asked for `name` (any type, any case). */
export function queriesFor(log: string, name: string): string[] {
  const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return text.split('\n').filter((l) => new RegExp(`query\\[\\w+\\] ${escaped} from`, 'i').test(l));
}

/** Run fn with the path of a fresh query log (in a temporary directory removed after). */
export async function withQueryLogFile(fn: (log: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-qlog-'));
  try {
    await fn(join(dir, 'queries.log'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
