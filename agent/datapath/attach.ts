/*
 * How our two programs sit on a pod's host-side interface: the enforcer on
 * ingress (the pod's egress), the learner on egress (DNS answers to the pod).
 *
 * tcx (kernel 6.6+): tcx programs run before legacy tc filters, and a pass
 * (TCX_PASS) from any of them ends the chain. So where the kernel has tcx we
 * attach as tcx links at the HEAD of the chain (BPF_F_BEFORE without a
 * relative program), and pin each link at
 *     <pinDir>/link_<ifindex>_ingress   and   <pinDir>/link_<ifindex>_egress
 * so it outlives the agent. A restarted agent opens its pin and swaps the
 * program in place (bpf_link_update): the link never leaves the chain and
 * keeps its place in it. Our programs pass with TC_ACT_UNSPEC, which is
 * TCX_NEXT: the rest of the chain (a CNI's programs, then legacy tc) runs.
 *
 * Legacy tc (clsact + cls_bpf, handle 0xfe0e, priority 1) is used on older
 * kernels, when the kernel refuses the tcx link (auto mode), and when forced
 * (--attach-mode legacy).
 *
 * Every switch puts the new attachment in before taking the old one out, so
 * there is no moment without enforcement: legacy → tcx (an upgraded node)
 * creates the links, then deletes our legacy filters; tcx → legacy does the
 * reverse. Detach removes both kinds of ours (links detached and unpinned,
 * legacy filters deleted) and never another program or the clsact qdisc.
 *
 * Taking the head back (retakeHead, for head-guard.ts): a link cannot move
 * in its chain, so a new link of ours goes in at the head, is pinned beside
 * the old one (<pin>_next), renamed over the old pin (atomic on bpffs), and
 * only then the old link is detached. A program can be in a chain only once
 * (EEXIST), so the new link runs another instance of ours than the old one
 * (the agent loads two; they alternate). Ours runs twice on the packets of
 * those few microseconds, never zero times. A crash in between leaves a
 * <pin>_next behind; the next attach removes it (the guard then retakes).
 *
 * Owns no policy about pods; Datapath.attach/detach/attached delegate here.
 */
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { native, BPF_F_BEFORE, BPF_LINK_TYPE_TCX, type BpfError, type TcDirection, type TcxChain } from './native.js';

export type AttachMode = 'auto' | 'tcx' | 'legacy';
export const ATTACH_MODES: readonly AttachMode[] = ['auto', 'tcx', 'legacy'];
export type Direction = TcDirection;
const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

/** Our legacy tc filters, found and replaced by handle and priority only. */
export const TC_HANDLE = 0xfe0e;
/** Priority 1: our filter runs before filters a CNI adds at a later priority. */
export const TC_PRIORITY = 1;

/**
 * Errors of BPF_LINK_CREATE that mean "no tcx here" (older kernel, no
 * support for this device or attach type, chain full): auto mode then
 * falls back to legacy tc. Anything else (EPERM, ENODEV, ...) is an error.
 */
const TCX_UNAVAILABLE = new Set(['EINVAL', 'EOPNOTSUPP', 'ENOTSUPP', 'E2BIG', 'ERANGE']);

/** Which program runs where: the enforcer on ingress, the learner on egress. */
export interface ProgramFds {
  ingress: number;
  egress: number;
}

export interface AttachTarget {
  /** network namespace path (/var/run/netns/NAME); default: the caller's */
  netns?: string;
}

/** created: a new link; updated: its program swapped; kept: it already ran this program */
export type LinkAction = 'created' | 'updated' | 'kept';

export interface AttachResult {
  mode: 'tcx' | 'legacy';
  /** auto mode: why tcx was refused (the kernel's answer), when it fell back */
  fallbackReason?: string;
  /** tcx: what happened to each link */
  links?: Record<Direction, LinkAction>;
  /** our legacy filters were removed after the links went in (upgrade) */
  legacyRemoved: boolean;
  /** our tcx links were removed after the legacy filters went in (forced legacy) */
  linksRemoved: boolean;
  /** other programs that run before ours (see chainWarnings) */
  warnings: string[];
}

export interface HookState {
  direction: Direction;
  /** how ours is attached on this hook, or null when it is not */
  mode: 'tcx' | 'legacy' | null;
  /** the program id of ours, or null */
  progId: number | null;
  /** tcx: our link's id */
  linkId: number | null;
  /** the tcx chain in run order (null: the kernel has no tcx) */
  tcxChain: number[] | null;
  /** programs that run before ours and can skip it */
  ahead: number[];
}

export interface InterfaceAttachment {
  /** mixed: one direction tcx, the other legacy (an interrupted switch) */
  mode: 'tcx' | 'legacy' | 'mixed' | 'none';
  ingress: HookState;
  egress: HookState;
  warnings: string[];
}

export function linkPin(pinDir: string, ifindex: number, direction: Direction): string {
  return join(pinDir, `link_${ifindex}_${direction}`);
}

/** Where a retake pins the new link before renaming it over linkPin (bpffs refuses dots in names). */
function stagedPin(pinDir: string, ifindex: number, direction: Direction): string {
  return `${linkPin(pinDir, ifindex, direction)}_next`;
}

function legacyTarget(ifindex: number, direction: Direction, target: AttachTarget) {
  return {
    ifindex,
    direction,
    handle: TC_HANDLE,
    priority: TC_PRIORITY,
    ...(target.netns ? { netns: target.netns } : {}),
  };
}

function tcxTarget(ifindex: number, direction: Direction, target: AttachTarget) {
  return { ifindex, direction, ...(target.netns ? { netns: target.netns } : {}) };
}

function errCode(err: unknown): string | undefined {
  return (err as BpfError).code;
}

/**
 * Our pinned link for this hook, when it is still attached there; null when
 * there is no pin or the pin is stale (its device gone: ifindex 0). Reading
 * leaves a stale pin alone; `removeStale` (the attach path) removes it. The
 * caller closes the returned fd.
 */
function openOwnLink(
  pin: string,
  ifindex: number,
  direction: Direction,
  removeStale = false,
): { fd: number; id: number; progId: number } | null {
  let fd: number;
  try {
    fd = native.objGet(pin);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw err;
  }
  try {
    const info = native.linkInfo(fd);
    if (info.type === BPF_LINK_TYPE_TCX && info.tcx?.ifindex === ifindex && info.tcx.direction === direction) {
      return { fd, id: info.id, progId: info.progId };
    }
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
  if (removeStale) releaseLink(pin, fd);
  else native.closeFd(fd);
  return null;
}

/** Detach a link now, whoever else holds it; a link already severed (device gone) is fine. */
function detachLink(fd: number): void {
  try {
    native.linkDetach(fd);
  } catch (err) {
    if (errCode(err) !== 'ENOLINK') throw err;
  }
}

/** Detach (whoever else holds it), unpin and close. */
function releaseLink(pin: string, fd: number): void {
  try {
    detachLink(fd);
  } finally {
    native.closeFd(fd);
  }
  native.unpin(pin);
}

/** Put our link at the head of the chain, or update the pinned one in place. */
function attachLink(
  pinDir: string,
  ifindex: number,
  direction: Direction,
  progFd: number,
  target: AttachTarget,
): LinkAction {
  // A retake cut short left its new link here; the old one is still pinned in place (the rename is atomic).
  // It goes first: it may run the very program the update below puts on the pinned link.
  removePinned(stagedPin(pinDir, ifindex, direction));
  return placeLink(pinDir, ifindex, direction, progFd, target);
}

function placeLink(
  pinDir: string,
  ifindex: number,
  direction: Direction,
  progFd: number,
  target: AttachTarget,
): LinkAction {
  const pin = linkPin(pinDir, ifindex, direction);
  const own = openOwnLink(pin, ifindex, direction, true);
  if (own) {
    try {
      if (own.progId === native.progInfo(progFd).id) return 'kept';
      native.linkUpdate(own.fd, progFd);
      return 'updated';
    } catch (err) {
      // The device went away under us: the link is severed; make a new one below.
      if (errCode(err) !== 'ENOLINK') throw err;
    } finally {
      native.closeFd(own.fd);
    }
    native.unpin(pin);
  }
  const linkFd = native.tcxAttach({ ...tcxTarget(ifindex, direction, target), progFd, flags: BPF_F_BEFORE });
  try {
    native.pinObject(linkFd, pin);
  } finally {
    native.closeFd(linkFd); // unpinned, closing the last fd detaches it again
  }
  return 'created';
}

/** Detach and unpin the link pinned at `pin`; false when there was none. */
function removePinned(pin: string): boolean {
  let fd: number;
  try {
    fd = native.objGet(pin);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return false;
    throw err;
  }
  releaseLink(pin, fd);
  return true;
}

/** Remove our pinned link of this hook (and a retake's leftover); false when there was none. */
function removeLink(pinDir: string, ifindex: number, direction: Direction): boolean {
  const staged = removePinned(stagedPin(pinDir, ifindex, direction));
  return removePinned(linkPin(pinDir, ifindex, direction)) || staged;
}

/** The id of our link on this hook, when it is pinned and still attached there; else null. */
export function ownLinkId(pinDir: string, ifindex: number, direction: Direction): number | null {
  const own = openOwnLink(linkPin(pinDir, ifindex, direction), ifindex, direction);
  if (!own) return null;
  native.closeFd(own.fd);
  return own.id;
}

/**
 * Take the head of a tcx chain back from programs that went in front of
 * our link: a new link at the head, running the first of `instances` (fds
 * of instances of our program for this hook) that the old link does not
 * run, pinned in place of the old one; then the old one detached (no moment
 * without ours; see the header). Returns the new link's id. Throws (and
 * leaves the old link pinned and attached) when ours is not pinned here,
 * no other instance is given, or the kernel refuses.
 */
export function retakeHead(
  pinDir: string,
  ifindex: number,
  direction: Direction,
  instances: number[],
  target: AttachTarget = {},
): { linkId: number; replaced: number } {
  const pin = linkPin(pinDir, ifindex, direction);
  const staged = stagedPin(pinDir, ifindex, direction);
  const what = `retake the head of ifindex ${ifindex} tcx ${direction}`;
  const old = openOwnLink(pin, ifindex, direction);
  if (!old) throw new Error(`${what}: no link of ours is pinned at ${pin}`);
  try {
    const progFd = instances.find((fd) => native.progInfo(fd).id !== old.progId);
    if (progFd === undefined)
      throw new Error(
        `${what}: no instance of our program other than the one the link runs (prog ${old.progId}); a program can be in a chain only once`,
      );
    const linkFd = native.tcxAttach({ ...tcxTarget(ifindex, direction, target), progFd, flags: BPF_F_BEFORE });
    let linkId: number;
    try {
      linkId = native.linkInfo(linkFd).id;
      removePinned(staged);
      native.pinObject(linkFd, staged);
      try {
        renameSync(staged, pin); // atomic: the pin now holds the new link; the old one lives on our fd
      } catch (err) {
        native.unpin(staged);
        throw new Error(`${what}: rename ${staged} over ${pin}: ${(err as Error).message}`);
      }
    } finally {
      native.closeFd(linkFd); // pinned: stays; unpinned after a failure: detached again
    }
    detachLink(old.fd);
    return { linkId, replaced: old.id };
  } finally {
    native.closeFd(old.fd);
  }
}

/** The tcx chain of a hook in run order (throws when the kernel has no tcx or the device is gone). */
export function queryChain(ifindex: number, direction: Direction, target: AttachTarget = {}): TcxChain {
  return native.tcxQuery(tcxTarget(ifindex, direction, target));
}

/** Null when the kernel offers tcx (its chain on the loopback device can be queried), else the kernel's answer. */
export function tcxUnavailable(target: AttachTarget = {}): string | null {
  try {
    native.tcxQuery(tcxTarget(1, 'ingress', target));
    return null;
  } catch (err) {
    if (TCX_UNAVAILABLE.has(errCode(err) ?? '')) return (err as Error).message;
    throw err;
  }
}

/** The tcx chain of a hook, or null when the kernel has no tcx. */
function tcxChain(ifindex: number, direction: Direction, target: AttachTarget): TcxChain | null {
  try {
    return native.tcxQuery(tcxTarget(ifindex, direction, target));
  } catch (err) {
    if (TCX_UNAVAILABLE.has(errCode(err) ?? '')) return null;
    throw err;
  }
}

function legacyAttach(ifindex: number, progs: ProgramFds, target: AttachTarget): void {
  for (const direction of DIRECTIONS)
    native.tcAttach({ ...legacyTarget(ifindex, direction, target), progFd: progs[direction] });
}

function legacyDetach(ifindex: number, target: AttachTarget): boolean {
  let removed = false;
  for (const direction of DIRECTIONS) removed = native.tcDetach(legacyTarget(ifindex, direction, target)) || removed;
  return removed;
}

/**
 * Attach both programs to an interface in the given mode. Idempotent: called
 * again (a policy change, a restarted agent) it keeps or updates what is
 * there, without a gap.
 */
export function attachPrograms(
  pinDir: string,
  ifindex: number,
  progs: ProgramFds,
  mode: AttachMode,
  target: AttachTarget = {},
): AttachResult {
  let fallbackReason: string | undefined;
  if (mode !== 'legacy') {
    const links = {} as Record<Direction, LinkAction>;
    try {
      for (const direction of DIRECTIONS)
        links[direction] = attachLink(pinDir, ifindex, direction, progs[direction], target);
    } catch (err) {
      if (mode === 'tcx' || !TCX_UNAVAILABLE.has(errCode(err) ?? '')) throw err;
      fallbackReason = (err as Error).message;
    }
    if (fallbackReason === undefined) {
      // The links run first now: our legacy filters (an upgraded node) can go.
      const legacyRemoved = legacyDetach(ifindex, target);
      return {
        mode: 'tcx',
        links,
        legacyRemoved,
        linksRemoved: false,
        warnings: inspectAttachment(pinDir, ifindex, target).warnings,
      };
    }
  }
  legacyAttach(ifindex, progs, target);
  let linksRemoved = false;
  for (const direction of DIRECTIONS) linksRemoved = removeLink(pinDir, ifindex, direction) || linksRemoved;
  return {
    mode: 'legacy',
    ...(fallbackReason !== undefined ? { fallbackReason } : {}),
    legacyRemoved: false,
    linksRemoved,
    warnings: inspectAttachment(pinDir, ifindex, target).warnings,
  };
}

/** Remove our links and legacy filters; other programs and clsact stay. False when none was there. */
export function detachPrograms(pinDir: string, ifindex: number, target: AttachTarget = {}): boolean {
  let removed = false;
  for (const direction of DIRECTIONS) removed = removeLink(pinDir, ifindex, direction) || removed;
  return legacyDetach(ifindex, target) || removed;
}

/** The prog id of ours on this hook (tcx link first, then legacy filter), or null. */
export function attachedProgram(
  pinDir: string,
  ifindex: number,
  direction: Direction,
  target: AttachTarget = {},
): number | null {
  const own = openOwnLink(linkPin(pinDir, ifindex, direction), ifindex, direction);
  if (own) {
    native.closeFd(own.fd);
    return own.progId;
  }
  return native.tcQuery(legacyTarget(ifindex, direction, target));
}

const ROLE: Record<Direction, string> = { ingress: 'enforcer (ingress)', egress: 'DNS learner (egress)' };

function hookState(pinDir: string, ifindex: number, direction: Direction, target: AttachTarget): HookState {
  const own = openOwnLink(linkPin(pinDir, ifindex, direction), ifindex, direction);
  if (own) native.closeFd(own.fd);
  const chain = tcxChain(ifindex, direction, target);
  const tcxIds = chain?.progIds ?? null;
  if (own) {
    const at = chain ? chain.linkIds.indexOf(own.id) : -1;
    return {
      direction,
      mode: 'tcx',
      progId: own.progId,
      linkId: own.id,
      tcxChain: tcxIds,
      ahead: at > 0 ? chain!.progIds.slice(0, at) : [],
    };
  }
  const legacy = native.tcQuery(legacyTarget(ifindex, direction, target));
  if (legacy !== null)
    return { direction, mode: 'legacy', progId: legacy, linkId: null, tcxChain: tcxIds, ahead: tcxIds ?? [] };
  return { direction, mode: null, progId: null, linkId: null, tcxChain: tcxIds, ahead: [] };
}

/** What a hook's state means for enforcement, in words (empty: all well). */
export function chainWarnings(hook: HookState): string[] {
  if (hook.mode === null || hook.ahead.length === 0) return [];
  const ids = hook.ahead.map((id) => `prog ${id}`).join(', ');
  return hook.mode === 'tcx'
    ? [`${ROLE[hook.direction]}: another tcx program runs before ours (${ids}); if it returns pass, ours is skipped`]
    : [
        `${ROLE[hook.direction]}: tcx program(s) attached (${ids}) run before our legacy tc filter; if one returns pass, ours is skipped`,
      ];
}

/** Everything egressctl status shows about one interface. */
export function inspectAttachment(pinDir: string, ifindex: number, target: AttachTarget = {}): InterfaceAttachment {
  const ingress = hookState(pinDir, ifindex, 'ingress', target);
  const egress = hookState(pinDir, ifindex, 'egress', target);
  const mode =
    ingress.mode === null && egress.mode === null
      ? 'none'
      : ingress.mode === egress.mode
        ? ingress.mode!
        : ingress.mode === null || egress.mode === null
          ? (ingress.mode ?? egress.mode)!
          : 'mixed';
  return { mode, ingress, egress, warnings: [...chainWarnings(ingress), ...chainWarnings(egress)] };
}

/** The agent's log line for an interface's attach result: level, message, fields. */
export function describeAttach(result: AttachResult): {
  level: 'info' | 'warn';
  msg: string;
  fields: Record<string, unknown>;
} {
  const fields: Record<string, unknown> = { attachMode: result.mode };
  if (result.links) fields.links = result.links;
  if (result.legacyRemoved) fields.legacyFiltersRemoved = true;
  if (result.linksRemoved) fields.tcxLinksRemoved = true;
  if (result.warnings.length > 0) fields.warnings = result.warnings;
  if (result.fallbackReason !== undefined) {
    fields.reason = result.fallbackReason;
    return {
      level: 'warn',
      msg: 'the kernel refused the tcx link: programs attached through legacy tc, where a tcx program that passes skips them',
      fields,
    };
  }
  const msg =
    result.mode === 'tcx'
      ? 'programs attached as tcx links at the head of the chain'
      : 'programs attached through legacy tc';
  return { level: result.warnings.length > 0 ? 'warn' : 'info', msg, fields };
}
