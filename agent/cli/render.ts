/*
 * Text rendering for egressctl: aligned tables for a terminal (color only
 * on a TTY) and stable JSON for scripts. Pure.
 */
import type { DropRecord, HeadGuard, PodReport, StatusReport } from './state.js';

export interface Style {
  color: boolean;
}

const codes = { bold: [1, 22], dim: [2, 22], red: [31, 39], green: [32, 39], yellow: [33, 39] } as const;

function paint(style: Style, code: keyof typeof codes, text: string): string {
  return style.color ? `\u001b[${codes[code][0]}m${text}\u001b[${codes[code][1]}m` : text;
}

/** Columns padded to the widest cell (ANSI codes do not count). */
export function table(rows: string[][], style: Style): string {
  if (rows.length === 0) return '';
  const visible = (s: string) => s.replace(/\u001b\[\d+m/g, '').length;
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => visible(r[i] ?? ''))));
  return rows
    .map((r, ri) => {
      const line = r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i]! - visible(c)))).join('  ');
      return ri === 0 ? paint(style, 'bold', line) : line;
    })
    .join('\n');
}

function left(seconds: number | null): string {
  if (seconds === null) return 'never expires';
  if (seconds < 120) return `${seconds.toFixed(1)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m${Math.floor(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
}

function decidedBy(p: Pick<PodReport, 'decidedBy' | 'annotationIgnored'>): string {
  if (p.decidedBy.length === 0) return '(not recorded: written by an older agent)';
  return `${p.decidedBy.join(', ')}${p.annotationIgnored ? " (the pod's fqdn-egress.io annotations are ignored)" : ''}`;
}

/** egressctl policies: which policy resources (or the annotation) decide each pod. */
export function renderPolicies(
  pods: Array<Pick<PodReport, 'namespace' | 'name' | 'mode' | 'decidedBy' | 'annotationIgnored'>>,
  style: Style,
): string {
  if (pods.length === 0) return 'no enforced pods';
  const rows = [['POD', 'MODE', 'DECIDED BY', 'ANNOTATION']];
  for (const p of pods) {
    const annotation = p.decidedBy.includes('annotation') ? 'in force' : p.annotationIgnored ? 'ignored' : '-';
    rows.push([`${p.namespace}/${p.name}`, p.mode, p.decidedBy.join(', ') || '(not recorded)', annotation]);
  }
  return table(rows, style);
}

export function renderInspect(pods: PodReport[], style: Style): string {
  if (pods.length === 0) return 'no enforced pods';
  const out: string[] = [];
  for (const p of pods) {
    const mode = p.mode === 'audit' ? paint(style, 'yellow', 'audit') : paint(style, 'green', 'enforce');
    out.push(
      `${paint(style, 'bold', `${p.namespace}/${p.name}`)}  identity ${p.identity}  interface ${p.interface} (${p.ifindex})  mode ${mode}  dns-filter ${p.dnsFilter}`,
    );
    out.push(`  decided by: ${decidedBy(p)}`);
    if (p.allow.length === 0) out.push('  allowed names: (none: DNS only)');
    else {
      const rows = [['ALLOWED NAME', 'PORTS', 'FROM']];
      for (const a of p.allow) rows.push([a.pattern, a.ports.join(','), a.from.join(', ') || '(not recorded)']);
      out.push(table(rows, style).replace(/^/gm, '  '));
    }
    out.push(
      `  packets: passed ${p.counters.passed}, dropped ${p.counters.dropped}, audited ${p.counters.audited}; learned in the kernel ${p.counters.learnedInKernel}, answers left to the agent ${p.counters.answersLeftToAgent}`,
    );
    if (p.ips.length === 0) out.push('  allowed IPs: none yet (no answer for an allowed name)');
    else {
      const rows = [['IP', 'NAME', 'PORTS', 'LEARNED BY', 'TIME LEFT']];
      for (const ip of p.ips)
        rows.push([ip.ip, ip.name ?? '(allowCIDRs)', ip.ports.join(','), ip.learnedBy, left(ip.expiresInSeconds)]);
      out.push(table(rows, style).replace(/^/gm, '  '));
    }
    if (p.trackedAfterTtl.length > 0) {
      out.push('  tracked connections past their TTL (pass until idle):');
      const rows = [['PROTO', 'POD PORT', 'PEER', 'IDLE']];
      for (const f of p.trackedAfterTtl)
        rows.push([f.proto, String(f.podPort), `${f.peer}:${f.peerPort}`, `${f.idleSeconds}s`]);
      out.push(table(rows, style).replace(/^/gm, '    '));
    }
    out.push('');
  }
  return out.join('\n').trimEnd();
}

export function dropRows(drops: DropRecord[], style: Style, header = true): string {
  const rows = header ? [['TIME', 'POD', 'KIND', 'REASON', 'PROTO', 'DESTINATION', 'PORT', 'NAME']] : [];
  for (const d of drops) {
    rows.push([
      d.time,
      d.pod ?? '(gone)',
      d.kind === 'drop' ? paint(style, 'red', 'drop') : paint(style, 'yellow', 'audit'),
      d.reason,
      d.proto,
      d.destination,
      String(d.port),
      d.queryType ? `${d.name} (${d.queryType} query)` : (d.name ?? '-'),
    ]);
  }
  return table(rows, style);
}

/** One line with every feature's state, then one per state that is not the best, with what it means. */
function featureLines(s: StatusReport, style: Style): string[] {
  if (!s.features)
    return [
      `inline DNS learner: ${s.agent.inlineLearner === 'on' ? 'on' : paint(style, 'yellow', 'off (userspace learning only)')} (other feature states: not written by this agent)`,
    ];
  return [
    `datapath: ${s.features.map((f) => (f.best ? `${f.feature} ${f.state}` : paint(style, 'yellow', `${f.feature} ${f.state}`))).join(', ')}`,
    ...s.features
      .filter((f) => !f.best)
      .map((f) =>
        paint(style, 'yellow', `  ${f.feature} ${f.state}${f.reason ? ` (${f.reason})` : ''}: ${f.effect ?? ''}`),
      ),
  ];
}

function headRetaken(g: HeadGuard | null): string {
  if (!g || g.retakes === 0) return '-';
  return `${g.retakes}x${g.lastRetakeSecondsAgo !== null ? `, last ${g.lastRetakeSecondsAgo.toFixed(0)}s ago` : ''}`;
}

function headGuardWarnings(g: HeadGuard | null): string[] {
  if (!g?.backingOff) return [];
  const ahead = g.aheadProgId !== null ? ` (prog ${g.aheadProgId})` : '';
  return [
    `the head guard took the chain back ${g.retakes} times and gave up for ${g.backoffSecondsLeft}s more: another program keeps going first${ahead}`,
  ];
}

export function renderStatus(s: StatusReport, style: Style): string {
  const agent = s.agent.running
    ? paint(style, 'green', `up (pid ${s.agent.pid ?? '?'}, heartbeat ${s.agent.heartbeatAgeSeconds?.toFixed(1)}s ago)`)
    : paint(
        style,
        'red',
        `down${s.agent.heartbeatAgeSeconds !== null ? ` (last heartbeat ${s.agent.heartbeatAgeSeconds.toFixed(0)}s ago)` : ''}: enforcement and kernel learning go on from the pins`,
      );
  const out = [
    `pin dir: ${s.pinDir}`,
    `agent: ${agent}`,
    ...featureLines(s, style),
    `packets: passed ${s.totals.passed}, dropped ${s.totals.dropped}, audited ${s.totals.audited}; learned in the kernel ${s.totals.learnedInKernel}, answers left to the agent ${s.totals.answersLeftToAgent}`,
    '',
    table(
      [
        ['POD', 'INTERFACE', 'ATTACH', 'ENFORCER (ingress)', 'LEARNER (egress)', 'HEAD RETAKEN'],
        ...s.interfaces.map((i) => [
          i.pod,
          `${i.interface} (${i.ifindex})`,
          i.attachMode === 'tcx' || i.attachMode === 'legacy' ? i.attachMode : paint(style, 'red', i.attachMode),
          i.enforcer === null ? paint(style, 'red', 'not attached') : `prog ${i.enforcer}`,
          i.learner === null ? paint(style, 'red', 'not attached') : `prog ${i.learner}`,
          headRetaken(i.headGuard),
        ]),
      ],
      style,
    ),
    ...s.interfaces.flatMap((i) =>
      [...i.warnings, ...headGuardWarnings(i.headGuard)].map((w) =>
        paint(style, 'yellow', `WARNING: ${i.pod} on ${i.interface}: ${w}`),
      ),
    ),
    '',
    table(
      [
        ['MAP', 'ENTRIES', 'CAPACITY', 'FILL'],
        ...s.maps.map((m) => [m.map, String(m.entries), String(m.capacity), `${(m.fill * 100).toFixed(2)}%`]),
      ],
      style,
    ),
  ];
  return out.join('\n');
}
