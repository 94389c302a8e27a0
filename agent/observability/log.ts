/*
 * The agent's logger: pino JSON lines on stdout, with pod, name and reason
 * as fields. Owns nothing else.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { component: 'fqdn-egress-agent' }, timestamp: pino.stdTimeFunctions.isoTime });
}
