/*
 * The agent's logger: pino JSON lines on stdout, with pod, name and reason
 * as fields. Owns nothing else.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { component: 'fqdn-egress-agent' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * At most `perWindow` lines per kind in each window; the rest are counted and
 * reported in one line when the next window opens. A pod can send junk as
 * fast as it likes; the log does not grow with it (the metrics still count
 * every message).
 */
export class RateLimitedLog {
  private readonly windows = new Map<string, { start: number; lines: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly perWindow = 10,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  info(kind: string, fields: Record<string, unknown>, msg: string): void {
    this.line('info', kind, fields, msg);
  }

  warn(kind: string, fields: Record<string, unknown>, msg: string): void {
    this.line('warn', kind, fields, msg);
  }

  private line(level: 'info' | 'warn', kind: string, fields: Record<string, unknown>, msg: string): void {
    const t = this.now();
    let w = this.windows.get(kind);
    if (!w || t - w.start >= this.windowMs) {
      if (w && w.suppressed > 0)
        this.log[level](
          { kind, suppressed: w.suppressed, windowMs: this.windowMs },
          `${msg}: more lines of this kind were suppressed`,
        );
      w = { start: t, lines: 0, suppressed: 0 };
      this.windows.set(kind, w);
    }
    if (w.lines < this.perWindow) {
      w.lines++;
      this.log[level](fields, msg);
    } else {
      w.suppressed++;
    }
  }
}
