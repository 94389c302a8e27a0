/*
 * Domain-name patterns of the opt-in annotation: normalization of names and
 * parsing and matching of `NamePattern`s. Pure; owns what a valid name and a
 * valid pattern are, nothing else (no annotation syntax, no ports, no hashes).
 *
 * A name is valid when, after dropping one trailing dot and lower-casing
 * ASCII letters, it is 1..253 characters long (255 bytes in wire format),
 * every label is 1..63 characters of [a-z0-9_-] and neither starts nor ends
 * with '-', and it is not an IP address (nor ends in an all-digit label, which
 * no real top-level domain does). Single-label names (`localhost`) are valid.
 *
 * A pattern is an exact name or `*.suffix` (suffix a valid name). A wildcard
 * matches one or more labels in front of the suffix and never the suffix
 * itself (NPEP-133). `*` is allowed only as that whole first label.
 *
 * API:
 *   normalizeName(text): string                  throws NameError
 *   parsePattern(text): NamePattern               throws NameError
 *   matchesPattern(pattern, name): boolean        invalid name → false
 *   patternToString(pattern): string              canonical text, a good map key
 */

export type NamePattern = { kind: 'exact'; name: string } | { kind: 'wildcard'; suffix: string };

export const MAX_NAME_LENGTH = 253;
export const MAX_LABEL_LENGTH = 63;

/** A name or pattern that is not valid; `reason` says why, without the input. */
export class NameError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`invalid name "${input}": ${reason}`);
    this.name = 'NameError';
  }
}

const LABEL_CHARS = /^[a-z0-9_-]+$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/;
const IPV6 = /^\[?[0-9a-f]*:[0-9a-f]*:[0-9a-f:.]*\]?(\/\d{1,3})?$/i;
const ALL_DIGITS = /^\d+$/;
const CIDR_HINT = "allow addresses with the agent's allowCIDRs instead";

function lowerAscii(text: string): string {
  return text.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

function shorten(text: string): string {
  return text.length > 20 ? `${text.slice(0, 20)}…` : text;
}

/** Why `name` (already without trailing dot, lower-cased) is invalid, or null. */
function nameProblem(name: string): string | null {
  if (name === '') return 'name is empty';
  if (IPV4.test(name)) return `an IPv4 address is not a name; ${CIDR_HINT}`;
  if (name.includes(':') && IPV6.test(name)) return `an IPv6 address is not a name; ${CIDR_HINT}`;
  if (name.startsWith('.')) return 'name starts with "."';
  if (name.endsWith('.')) return 'name ends with more than one "."';
  if (name.length > MAX_NAME_LENGTH) {
    return `name is ${name.length} characters long, at most ${MAX_NAME_LENGTH} are allowed (255 bytes in wire format)`;
  }
  const labels = name.split('.');
  for (const label of labels) {
    if (label === '') return 'empty label ("..")';
    if (label.length > MAX_LABEL_LENGTH) {
      return `label "${shorten(label)}" is ${label.length} characters long, at most ${MAX_LABEL_LENGTH} are allowed`;
    }
    if (!LABEL_CHARS.test(label)) {
      const bad = [...label].find((c) => !LABEL_CHARS.test(c)) ?? '?';
      const what =
        bad === '*'
          ? '"*" is only allowed as the whole first label ("*.example.com")'
          : `character "${bad}" is not allowed (letters, digits, "-" and "_" are)`;
      return `label "${shorten(label)}": ${what}`;
    }
    if (label.startsWith('-')) return `label "${shorten(label)}" starts with "-"`;
    if (label.endsWith('-')) return `label "${shorten(label)}" ends with "-"`;
  }
  if (ALL_DIGITS.test(labels[labels.length - 1]!)) {
    return `the last label "${shorten(labels[labels.length - 1]!)}" is all digits, which is not a domain name; ${CIDR_HINT}`;
  }
  return null;
}

function strip(text: string): string {
  const lower = lowerAscii(text);
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * The canonical form of a DNS name: lower case, no trailing dot.
 * Throws NameError if the name is not valid (see the module header).
 */
export function normalizeName(text: string): string {
  if (text === '.') throw new NameError(text, 'the root name "." is not allowed');
  const name = strip(text);
  const problem = nameProblem(name);
  if (problem !== null) throw new NameError(text, problem);
  return name;
}

/** Parses an exact name or `*.suffix`. Throws NameError with a clear reason. */
export function parsePattern(text: string): NamePattern {
  if (text === '*') throw new NameError(text, 'a lone "*" is not allowed; write "*.example.com"');
  if (text.startsWith('*.')) {
    const rest = text.slice(2);
    if (rest === '' || rest === '.') throw new NameError(text, 'wildcard needs a name after "*."');
    if (rest.includes('*')) {
      throw new NameError(text, '"*" is only allowed once, as the whole first label ("*.example.com")');
    }
    let suffix: string;
    try {
      suffix = normalizeName(rest);
    } catch (err) {
      throw err instanceof NameError ? new NameError(text, err.reason) : err;
    }
    // Room for at least one label ("x.") in front of the suffix.
    if (suffix.length + 2 > MAX_NAME_LENGTH) {
      throw new NameError(
        text,
        `wildcard suffix is ${suffix.length} characters long; no name of at most ${MAX_NAME_LENGTH} fits in front of it`,
      );
    }
    return { kind: 'wildcard', suffix };
  }
  if (text.includes('*')) {
    throw new NameError(text, '"*" is only allowed as the whole first label ("*.example.com")');
  }
  return { kind: 'exact', name: normalizeName(text) };
}

/**
 * Whether `name` (any DNS name as seen in an answer; normalized here, so case
 * and a trailing dot do not matter) matches the pattern. An invalid name
 * matches nothing.
 */
export function matchesPattern(pattern: NamePattern, name: string): boolean {
  let normalized: string;
  try {
    normalized = normalizeName(name);
  } catch {
    return false;
  }
  if (pattern.kind === 'exact') return normalized === pattern.name;
  // Valid names have no empty labels, so a non-empty prefix ending in "." is
  // one or more whole labels.
  return normalized.length > pattern.suffix.length + 1 && normalized.endsWith(`.${pattern.suffix}`);
}

/** Canonical text: `api.stripe.com` or `*.example.com`. */
export function patternToString(pattern: NamePattern): string {
  return pattern.kind === 'exact' ? pattern.name : `*.${pattern.suffix}`;
}
