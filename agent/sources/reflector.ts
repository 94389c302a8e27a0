/*
 * A small reflector over @kubernetes/client-node: keeps a store equal to
 * what the API server holds for one list/watch. It lists, then watches from
 * the list's resourceVersion with bookmarks and a server-side timeout;
 * resumes from the last seen resourceVersion after a disconnect; relists
 * (consistently) on 410 Gone, whether it comes as an ERROR event or as an
 * HTTP status; reconnects with capped exponential backoff and jitter; and a
 * watchdog ends silent (half-open) watches. The store is never cleared on
 * errors: the last state stands. Knows nothing of pods or policy.
 *
 * Why not client-node's informer (ListWatch): in 1.4.0 it never asks for
 * bookmarks or a server-side timeout, stops for good on any error other than
 * 410 (start() must be called again), resolves start() even when the list
 * failed, and can leave a watch open when stop() races a reconnect.
 */
import * as k8s from '@kubernetes/client-node';

/** What the source logs through (pino's Logger fits). */
export interface SourceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Capped exponential backoff with jitter: each delay is in [d/2, d), d = min(max, initial·2^n). */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly initialMs = 500,
    private readonly maxMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const d = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(d / 2 + (this.random() * d) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

export type KubeObject = { metadata?: k8s.V1ObjectMeta };
export interface ObjectList<T> {
  metadata?: k8s.V1ListMeta;
  items: T[];
}

interface ReflectorOptions<T> {
  /** for messages: "pods on node n1" */
  what: string;
  watchPath: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** resourceVersion "0" (any, cheap: the watch cache) or undefined (consistent, after a 410) */
  list(resourceVersion: string | undefined): Promise<ObjectList<T>>;
  watch: k8s.Watch;
  backoff: Backoff;
  watchTimeoutSeconds: number;
  listTimeoutMs: number;
  /**
   * The resource may not exist (a CRD not installed): a 404 on the list then
   * means no objects (the store empties, the reflector counts as synced) and
   * the list is tried again every `absentRecheckMs`.
   */
  mayBeAbsent?: boolean;
  /** default 30 s */
  absentRecheckMs?: number;
  onChange(): void;
  onSynced(): void;
  onError(err: Error): void;
  log: SourceLog;
}

function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

/** A short description of what client-node threw (ApiException's message carries all headers). */
export function describe(err: unknown): string {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string };
  const code = typeof e.statusCode === 'number' ? e.statusCode : typeof e.code === 'number' ? e.code : undefined;
  if (code !== undefined) {
    let detail = '';
    if (typeof e.body === 'string') {
      try {
        detail = (JSON.parse(e.body) as { message?: string }).message ?? e.body;
      } catch {
        detail = e.body;
      }
    } else if (e.body && typeof e.body === 'object') {
      detail = (e.body as { message?: string }).message ?? '';
    } else if (e.message && !e.message.startsWith('HTTP-Code')) {
      detail = e.message;
    }
    return `HTTP ${code}${detail ? `: ${detail.slice(0, 300)}` : ''}`;
  }
  // node-fetch's FetchError repeats the whole URL: keep the reason
  const m = /^request to \S+ failed, reason: (.*)$/s.exec(e.message ?? '');
  return m ? m[1]! : (e.message ?? String(err));
}

function hasStatus(err: unknown, status: number): boolean {
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  return e?.statusCode === status || e?.code === status;
}

function isGone(err: unknown): boolean {
  return hasStatus(err, 410);
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Keeps `store` equal to what the API server holds for one list/watch:
 * list, then watch from the list's resourceVersion; resume from the last seen
 * resourceVersion (bookmarks included) after a disconnect; relist on 410.
 * The store is never cleared on errors: the last state stands.
 */
export class Reflector<T extends KubeObject> {
  readonly store = new Map<string, T>();
  resourceVersion = '';
  synced = false;
  /** bumped on every transition; callbacks of an older attempt are ignored */
  private attempt = 0;
  private stopped = false;
  /** after a 410 the next list must be consistent (not from a possibly stale cache) */
  private consistentList = false;
  private eventsSinceList = 0;
  private controller: AbortController | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  /** the last list found the resource absent (404) */
  absent = false;

  constructor(private readonly o: ReflectorOptions<T>) {}

  start(): void {
    this.stopped = false;
    this.run();
  }

  stop(): void {
    this.stopped = true;
    this.invalidate();
  }

  private run(): void {
    if (this.stopped) return;
    const attempt = ++this.attempt;
    if (this.resourceVersion) this.watch(attempt);
    else void this.relist(attempt);
  }

  /** Forget the current attempt: abort its stream, stop its timers. */
  private invalidate(): void {
    this.attempt++;
    this.controller?.abort();
    this.controller = undefined;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
  }

  private later(delayMs: number): void {
    this.invalidate();
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => this.run(), delayMs);
  }

  private fail(phase: string, err: unknown): void {
    const delay = this.o.backoff.next();
    this.later(delay);
    if (!this.stopped) {
      this.o.onError(
        new Error(
          `kubernetes ${this.o.what}: ${phase} failed: ${describe(err)} (keeping the last state; retrying in ${delay} ms)`,
        ),
      );
    }
  }

  private async relist(attempt: number): Promise<void> {
    let list: ObjectList<T>;
    try {
      list = await withTimeout(this.o.list(this.consistentList ? undefined : '0'), this.o.listTimeoutMs, 'list');
    } catch (err) {
      if (attempt !== this.attempt) return;
      if (this.o.mayBeAbsent && hasStatus(err, 404)) this.whileAbsent();
      else this.fail('list', err);
      return;
    }
    if (attempt !== this.attempt || this.stopped) return;
    const rv = list.metadata?.resourceVersion;
    if (!rv) {
      this.fail('list', new Error('the list carried no resourceVersion'));
      return;
    }
    if (this.absent) this.o.log.info({ what: this.o.what }, 'kubernetes: the resource is served now');
    this.absent = false;
    this.store.clear();
    for (const item of list.items ?? []) this.store.set(objectKey(item), item);
    this.resourceVersion = rv;
    this.consistentList = false;
    this.eventsSinceList = 0;
    this.o.backoff.reset();
    this.o.log.debug({ what: this.o.what, resourceVersion: rv, items: this.store.size }, 'kubernetes: listed');
    if (!this.synced) {
      this.synced = true;
      this.o.onSynced();
    } else {
      this.o.onChange();
    }
    this.watch(attempt);
  }

  /** The resource is not served (404): no objects, until a later list finds it. */
  private whileAbsent(): void {
    const recheck = this.o.absentRecheckMs ?? 30_000;
    if (!this.absent)
      this.o.log.warn(
        { what: this.o.what, recheckMs: recheck },
        'kubernetes: the API server does not serve this resource (its CRD is not installed?): none are in force; checking again',
      );
    this.absent = true;
    const had = this.store.size > 0;
    this.store.clear();
    this.resourceVersion = '';
    this.o.backoff.reset();
    if (!this.synced) {
      this.synced = true;
      this.o.onSynced();
    } else if (had) this.o.onChange();
    this.later(recheck);
  }

  private watch(attempt: number): void {
    const startedAt = Date.now();
    let events = 0;
    const timeoutSeconds = Math.round(this.o.watchTimeoutSeconds * (1 + Math.random()));
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
    };
    if (this.o.fieldSelector) params.fieldSelector = this.o.fieldSelector;
    if (this.o.labelSelector) params.labelSelector = this.o.labelSelector;
    this.armWatchdog(attempt, timeoutSeconds);
    this.o.watch
      .watch(
        this.o.watchPath,
        params,
        (type: string, obj: unknown) => {
          if (attempt !== this.attempt) return;
          events++;
          this.handleEvent(attempt, type, obj, timeoutSeconds);
        },
        (err: unknown) => {
          if (attempt !== this.attempt) return;
          this.watchEnded(err, Date.now() - startedAt, events);
        },
      )
      .then(
        (controller) => {
          if (attempt === this.attempt) this.controller = controller;
          else controller.abort();
        },
        (err: unknown) => {
          if (attempt !== this.attempt) return;
          if (this.o.mayBeAbsent && hasStatus(err, 404)) this.whileAbsent();
          else this.fail('watch', err);
        },
      );
  }

  /** No event, not even a bookmark, and the server did not end the watch in time: the connection is dead. */
  private armWatchdog(attempt: number, timeoutSeconds: number): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(
      () => {
        if (attempt !== this.attempt) return;
        this.o.log.warn({ what: this.o.what }, 'kubernetes: watch silent past its timeout; reconnecting');
        this.invalidate();
        this.run();
      },
      (timeoutSeconds + 30) * 1000,
    );
  }

  private handleEvent(attempt: number, type: string, obj: unknown, timeoutSeconds: number): void {
    const o = obj as T;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
        this.store.set(objectKey(o), o);
        break;
      case 'DELETED':
        this.store.delete(objectKey(o));
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR': {
        const status = obj as k8s.V1Status;
        if (status?.code === 410) this.gone(status.message ?? 'Gone');
        else
          this.fail(
            'watch',
            new Error(`ERROR event ${status?.code ?? '?'} ${status?.reason ?? ''}: ${status?.message ?? ''}`),
          );
        return;
      }
      default:
        this.o.log.debug({ what: this.o.what, type }, 'kubernetes: unknown watch event type ignored');
        return;
    }
    const rv = o?.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    this.eventsSinceList++;
    this.o.backoff.reset();
    this.armWatchdog(attempt, timeoutSeconds);
    if (type !== 'BOOKMARK') this.o.onChange();
  }

  /** 410 Gone: our resourceVersion is older than the server's history; list afresh. */
  private gone(message: string): void {
    this.o.log.info(
      { what: this.o.what, resourceVersion: this.resourceVersion, message },
      'kubernetes: watch expired (410 Gone); relisting',
    );
    this.resourceVersion = '';
    this.consistentList = true;
    // a 410 right after a list (nothing seen since) means the server keeps saying so: back off
    if (this.eventsSinceList === 0) this.later(this.o.backoff.next());
    else {
      this.invalidate();
      this.run();
    }
  }

  private watchEnded(err: unknown, durationMs: number, events: number): void {
    if (err && isGone(err)) return this.gone(describe(err));
    if (err && this.o.mayBeAbsent && hasStatus(err, 404)) return this.whileAbsent();
    if (err) return this.fail('watch', err);
    // a clean end: the server's timeout, or it went away politely; resume from resourceVersion
    if (events === 0 && durationMs < 1000) {
      this.o.log.debug({ what: this.o.what }, 'kubernetes: watch ended at once; backing off');
      this.later(this.o.backoff.next());
      return;
    }
    this.invalidate();
    this.run();
  }
}
