/*
 * fqe_policy in step with the pods' rules: what the inline learner may learn
 * from, per identity, found by keyed name hash and holding the rule's real
 * name (the kernel compares those bytes with the question before a hash hit
 * counts). The sync keeps a shadow of what it wrote, so an edit deletes only
 * the rules that went and a removed pod leaves nothing behind.
 * Beside each rule, fqe_rule_origins (same key) says where it came from
 * (the annotation, or the policy resources), for egressctl inspect.
 */
import type { BpfMap } from '../datapath/bpf-map.js';
import {
  IPPROTO,
  PROTO_TLS,
  PolicyKind,
  type PolicyKey,
  type PolicyValue,
  type PortRule as KernelPortRule,
} from '../datapath/codecs.js';
import { originsText, type Origins } from '../datapath/maps/index.js';
import { wildcardHash, hashOrderBytes } from '../policy/name-hash.js';
import type { PodPolicy, PortRule } from '../policy/annotation.js';
import type { NameRegistry } from '../names/name-registry.js';

/** A policy's port rules as the kernel holds them. */
export function toKernelPorts(ports: PortRule[]): KernelPortRule[] {
  return ports.map((p) => ({
    port: p.port,
    proto: p.proto === 'tcp' ? IPPROTO.tcp : p.proto === 'udp' ? IPPROTO.udp : p.proto === 'tls' ? PROTO_TLS : 0,
  }));
}

export class PolicyMapSync {
  /** what fqe_policy holds per identity: "kind:hash" -> key */
  private readonly shadow = new Map<number, Map<string, PolicyKey>>();

  constructor(
    private readonly map: BpfMap<PolicyKey, PolicyValue>,
    private readonly origins: BpfMap<PolicyKey, Origins>,
    private readonly names: NameRegistry,
  ) {}

  /** The rules of one identity (none: the pod went) into fqe_policy; their names recorded. */
  sync(identity: number, policy: PodPolicy | undefined): void {
    const want = new Map<string, [PolicyKey, PolicyValue]>();
    const from: Array<[PolicyKey, Origins]> = [];
    for (const rule of policy?.rules ?? []) {
      const name = rule.pattern.kind === 'exact' ? rule.pattern.name : rule.pattern.suffix;
      const key =
        rule.pattern.kind === 'exact'
          ? { identity, kind: PolicyKind.exact, hash: this.names.hash(name) }
          : { identity, kind: PolicyKind.wildcard, hash: wildcardHash(name, this.names.hashKey) };
      want.set(`${key.kind}:${key.hash}`, [key, { ports: toKernelPorts(rule.ports), name: hashOrderBytes(name) }]);
      from.push([key, { flags: 0, text: originsText(rule.from) }]);
      this.names.remember(key.hash, name);
    }
    const have = this.shadow.get(identity) ?? new Map<string, PolicyKey>();
    const gone = [...have].filter(([k]) => !want.has(k)).map(([, key]) => key);
    this.map.deleteMany(gone);
    this.origins.deleteMany(gone);
    this.origins.setMany(from);
    this.map.setMany([...want.values()]);
    if (want.size === 0) this.shadow.delete(identity);
    else this.shadow.set(identity, new Map([...want].map(([k, [key]]) => [k, key])));
  }

  /** Identities that have rules in the map. */
  identities(): number[] {
    return [...this.shadow.keys()];
  }

  /** Every rule's hash (its name stays on record). */
  *hashes(): Iterable<bigint> {
    for (const keys of this.shadow.values()) for (const key of keys.values()) yield key.hash;
  }

  /** What fqe_policy holds at start-up, as the shadow. */
  restore(): void {
    for (const [key] of this.map.entries()) {
      const m = this.shadow.get(key.identity) ?? new Map<string, PolicyKey>();
      m.set(`${key.kind}:${key.hash}`, key);
      this.shadow.set(key.identity, m);
    }
  }
}
