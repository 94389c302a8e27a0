/*
 * Tests of the policy resources in the chart: the CRDs in
 * charts/fqdn-egress/crds/ (FQDNEgressPolicy, ClusterFQDNEgressPolicy) and
 * the `policies.enabled` value (ConfigMap flag, RBAC, NOTES).
 *
 * - helm: lint, and template with and without --include-crds (offline).
 * - The CRDs are structural schemas: checked by the rules of Kubernetes'
 *   apiextensions validation (every node typed, no $ref/definitions/…, no
 *   additionalProperties beside properties, metadata only name/generateName,
 *   valid defaults), and as objects against kubernetes-models' CRD class.
 * - Admission: every good example passes and every bad one is refused with
 *   its message by the schema as a whole: the OpenAPI keywords (a walker for
 *   the ones the CRDs use) and the x-kubernetes-validations rules run by a
 *   real CEL evaluator (@marcbachmann/cel-js), each rule also type-checked
 *   and its cost estimated after cel-go's cost model against the apiserver's
 *   limits.
 * Needs helm (see test/helpers/helm.ts) and @marcbachmann/cel-js; without
 * them the tests skip, except with CI=true where they fail.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { helm, needHelm, template, CHART, RELEASE, NAMESPACE, type Obj } from '../helpers/helm.js';

const CRD_DIR = join(CHART, 'crds');
const GROUP = 'fqdn-egress.io';
const NAMESPACED = `fqdnegresspolicies.${GROUP}`;
const CLUSTER = `clusterfqdnegresspolicies.${GROUP}`;

function one(objects: Obj[], kind: string): Obj {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0]!;
}

/** The CRDs as the chart ships them, by name. */
function crdFiles(): Map<string, Obj> {
  const crds = new Map<string, Obj>();
  for (const file of readdirSync(CRD_DIR).sort()) {
    const crd = parse(readFileSync(join(CRD_DIR, file), 'utf8')) as Obj;
    assert.equal(file, `${crd.metadata.name}.yaml`, 'a CRD file is named after its CRD');
    crds.set(crd.metadata.name, crd);
  }
  return crds;
}

function schemaOf(crd: Obj): Obj {
  assert.equal(crd.spec.versions.length, 1, `${crd.metadata.name}: one version`);
  return crd.spec.versions[0].schema.openAPIV3Schema;
}

// ---------------------------------------------------------------------------
// Structural schemas, after k8s.io/apiextensions-apiserver's validation
// (pkg/apis/apiextensions/validation and pkg/apiserver/schema): what the
// apiserver refuses in a v1 CRD's openAPIV3Schema.

/** The fields of JSONSchemaProps (apiextensions.k8s.io/v1); anything else is not a schema keyword. */
const SCHEMA_KEYWORDS = new Set([
  'id',
  '$schema',
  '$ref',
  'description',
  'type',
  'format',
  'title',
  'default',
  'maximum',
  'exclusiveMaximum',
  'minimum',
  'exclusiveMinimum',
  'maxLength',
  'minLength',
  'pattern',
  'maxItems',
  'minItems',
  'uniqueItems',
  'multipleOf',
  'enum',
  'maxProperties',
  'minProperties',
  'required',
  'items',
  'allOf',
  'oneOf',
  'anyOf',
  'not',
  'properties',
  'additionalProperties',
  'patternProperties',
  'dependencies',
  'additionalItems',
  'definitions',
  'externalDocs',
  'example',
  'nullable',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-embedded-resource',
  'x-kubernetes-int-or-string',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-list-type',
  'x-kubernetes-map-type',
  'x-kubernetes-validations',
]);
/** Keywords a v1 CRD may not use at all. */
const FORBIDDEN_KEYWORDS = [
  'id',
  '$schema',
  '$ref',
  'definitions',
  'dependencies',
  'patternProperties',
  'additionalItems',
];
/** Keywords that describe structure: not allowed inside allOf/anyOf/oneOf/not, which may only add value validations. */
const NOT_IN_JUNCTORS = [
  'type',
  'description',
  'default',
  'additionalProperties',
  'nullable',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-embedded-resource',
  'x-kubernetes-int-or-string',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-list-type',
  'x-kubernetes-map-type',
  'x-kubernetes-validations',
];
const TYPES = new Set(['object', 'array', 'string', 'integer', 'number', 'boolean']);
const RULE_FIELDS = new Set(['rule', 'message', 'messageExpression', 'reason', 'fieldPath', 'optionalOldSelf']);
const RULE_REASONS = new Set(['FieldValueInvalid', 'FieldValueForbidden', 'FieldValueRequired', 'FieldValueDuplicate']);

/** What keeps a CRD's openAPIV3Schema from being structural (and accepted by the apiserver); [] when nothing. */
function structuralErrors(root: Obj): string[] {
  const errors: string[] = [];
  const walk = (s: Obj, path: string, inJunctor: boolean): void => {
    const err = (what: string): void => void errors.push(`${path}: ${what}`);
    if (typeof s !== 'object' || s === null || Array.isArray(s)) return err('a schema must be an object');
    for (const key of Object.keys(s)) if (!SCHEMA_KEYWORDS.has(key)) err(`unknown schema field "${key}"`);
    for (const key of FORBIDDEN_KEYWORDS) if (key in s) err(`"${key}" is forbidden in a CRD schema`);
    if (s.uniqueItems === true) err('uniqueItems cannot be true (quadratic to check)');
    if (inJunctor) {
      for (const key of NOT_IN_JUNCTORS) if (key in s) err(`"${key}" is not allowed inside allOf/anyOf/oneOf/not`);
    } else {
      const intOrString = s['x-kubernetes-int-or-string'] === true;
      const preserve = s['x-kubernetes-preserve-unknown-fields'] === true;
      if (s.type === undefined && !intOrString && !preserve) err('type must be set (structural schema)');
      if (s.type !== undefined && !TYPES.has(s.type)) err(`unknown type "${s.type}"`);
      if (intOrString && s.type !== undefined) err('x-kubernetes-int-or-string takes no type');
    }
    if ('x-kubernetes-preserve-unknown-fields' in s && s['x-kubernetes-preserve-unknown-fields'] !== true)
      err('x-kubernetes-preserve-unknown-fields must be true or absent');
    if (s.additionalProperties === false) err('additionalProperties cannot be false (unknown fields are pruned)');
    if (s.additionalProperties !== undefined && s.properties !== undefined)
      err('additionalProperties and properties are mutually exclusive');
    if ((s.properties !== undefined || s.additionalProperties !== undefined) && s.type !== 'object' && !inJunctor)
      err('properties and additionalProperties need type object');
    if (s.type === 'array' && s.items === undefined) err('an array needs items');
    if (s.items !== undefined && (Array.isArray(s.items) || typeof s.items !== 'object'))
      err('items must be one schema, not a list');
    if (s['x-kubernetes-list-type'] !== undefined) {
      if (!['atomic', 'set', 'map'].includes(s['x-kubernetes-list-type'])) err('bad x-kubernetes-list-type');
      if (s.type !== 'array') err('x-kubernetes-list-type needs type array');
    }
    if (s['x-kubernetes-map-type'] !== undefined) {
      if (!['atomic', 'granular'].includes(s['x-kubernetes-map-type'])) err('bad x-kubernetes-map-type');
      if (s.type !== 'object') err('x-kubernetes-map-type needs type object');
    }
    for (const [i, rule] of (s['x-kubernetes-validations'] ?? []).entries()) {
      const at = `x-kubernetes-validations[${i}]`;
      for (const key of Object.keys(rule)) if (!RULE_FIELDS.has(key)) err(`${at}: unknown field "${key}"`);
      if (typeof rule.rule !== 'string' || rule.rule.trim() === '') err(`${at}: rule must be a non-empty string`);
      if (rule.message !== undefined && (typeof rule.message !== 'string' || !/^\S[^\n\r]*$/.test(rule.message.trim())))
        err(`${at}: message must be one non-empty line`);
      if (rule.reason !== undefined && !RULE_REASONS.has(rule.reason)) err(`${at}: unknown reason "${rule.reason}"`);
    }
    if (s.default !== undefined) {
      const issues = validateValue(s, s.default, `${path}.default`);
      for (const issue of issues) err(`default is not valid: ${issue.path}: ${issue.message}`);
    }
    for (const [name, child] of Object.entries((s.properties ?? {}) as Obj)) walk(child, `${path}.${name}`, inJunctor);
    if (typeof s.additionalProperties === 'object') walk(s.additionalProperties, `${path}[*]`, inJunctor);
    if (s.items && typeof s.items === 'object' && !Array.isArray(s.items)) walk(s.items, `${path}[]`, inJunctor);
    for (const junctor of ['allOf', 'anyOf', 'oneOf'])
      for (const [i, sub] of ((s[junctor] ?? []) as Obj[]).entries()) walk(sub, `${path}.${junctor}[${i}]`, true);
    if (s.not !== undefined) walk(s.not, `${path}.not`, true);
  };
  walk(root, 'openAPIV3Schema', false);
  if (root.type !== 'object') errors.push('openAPIV3Schema: the root must be type object');
  for (const key of ['apiVersion', 'kind'])
    if (root.properties?.[key] !== undefined && root.properties[key].type !== 'string')
      errors.push(`openAPIV3Schema.${key}: must be type string`);
  const metadata = root.properties?.metadata as Obj | undefined;
  if (metadata !== undefined) {
    // Only name and generateName may be restricted; the apiserver validates the rest of ObjectMeta.
    for (const key of Object.keys(metadata))
      if (!['type', 'properties', 'description'].includes(key))
        errors.push(`openAPIV3Schema.metadata: "${key}" is not allowed (only name and generateName)`);
    if (metadata.type !== 'object') errors.push('openAPIV3Schema.metadata: must be type object');
    for (const [name, child] of Object.entries((metadata.properties ?? {}) as Obj)) {
      if (name !== 'name' && name !== 'generateName')
        errors.push(`openAPIV3Schema.metadata.${name}: only name and generateName may be restricted`);
      else if ((child as Obj).type !== 'string') errors.push(`openAPIV3Schema.metadata.${name}: must be type string`);
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------
// Admission: the OpenAPI keywords these CRDs use, with the apiserver's
// messages, and the CEL rules of each node. Defaults are applied first, as
// the apiserver does.

interface Issue {
  path: string;
  message: string;
}

/** The part of @marcbachmann/cel-js that these tests use. */
interface CelNode {
  op: string;
  args: unknown;
}
interface CelProgram {
  (context: Record<string, unknown>): unknown;
  ast: CelNode;
}
interface CelEnvironment {
  registerVariable(name: string, type: string): CelEnvironment;
  check(expression: string): { valid: boolean; type?: string; error?: Error };
  parse(expression: string): CelProgram;
}
interface Cel {
  Environment: new () => CelEnvironment;
}

// A variable, not a literal: tsc compiles this file without the package.
const CEL_PACKAGE = '@marcbachmann/cel-js';

/** The CEL evaluator, or a skip (a failure with CI=true) when it is not installed. */
async function needCel(t: TestContext): Promise<Cel | undefined> {
  try {
    return (await import(CEL_PACKAGE)) as Cel;
  } catch (err) {
    const reason = `${CEL_PACKAGE} is not installed (a devDependency): ${(err as Error).message}`;
    if (process.env.CI === 'true') assert.fail(`${reason} (CI=true: failing instead of skipping)`);
    t.skip(reason);
    return undefined;
  }
}

/** The CEL type the apiserver gives `self` at a schema node (objects with properties as maps of dyn). */
function celType(s: Obj): string {
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
      return 'int';
    case 'number':
      return 'double';
    case 'boolean':
      return 'bool';
    case 'array':
      return `list<${celType(s.items)}>`;
    case 'object':
      return typeof s.additionalProperties === 'object'
        ? `map<string, ${celType(s.additionalProperties)}>`
        : 'map<string, dyn>';
    default:
      throw new Error(`no CEL type for schema type ${s.type}`);
  }
}

/** A JSON value as CEL sees it: integers are CEL ints (bigint in cel-js). */
function celValue(s: Obj, value: unknown): unknown {
  if (s.type === 'integer' && typeof value === 'number') return BigInt(value);
  if (s.type === 'array' && Array.isArray(value)) return value.map((v) => celValue(s.items, v));
  if (s.type === 'object' && value && typeof value === 'object') {
    const out: Obj = {};
    for (const [k, v] of Object.entries(value))
      out[k] = celValue(
        s.properties?.[k] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : {}),
        v,
      );
    return out;
  }
  return value;
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function typeMatches(type: string, value: unknown): boolean {
  const actual = typeName(value);
  return actual === type || (type === 'number' && actual === 'integer');
}

/** Fills in defaults where a field is absent, as the apiserver does before validating. */
function applyDefaults(s: Obj, value: unknown): unknown {
  if (s.type === 'object' && value && typeof value === 'object' && !Array.isArray(value)) {
    const out: Obj = { ...(value as Obj) };
    for (const [k, child] of Object.entries((s.properties ?? {}) as Obj)) {
      if (out[k] === undefined && child.default !== undefined) out[k] = structuredClone(child.default);
      if (out[k] !== undefined) out[k] = applyDefaults(child, out[k]);
    }
    return out;
  }
  if (s.type === 'array' && Array.isArray(value)) return value.map((v) => applyDefaults(s.items, v));
  return value;
}

/**
 * The issues the apiserver would report for value at a schema node: the
 * OpenAPI keywords, and with cel the node's x-kubernetes-validations (a rule
 * runs only where its node's value passed the type check, as in the apiserver).
 */
function validateValue(s: Obj, value: unknown, path: string, cel?: CompileRule): Issue[] {
  const issues: Issue[] = [];
  const add = (message: string, at = path): void => void issues.push({ path: at, message });
  if (s.type !== undefined && !typeMatches(s.type, value)) {
    add(`Invalid value: ${JSON.stringify(value)}: must be of type ${s.type}`);
    return issues;
  }
  if (s.enum !== undefined && !s.enum.some((e: unknown) => e === value))
    add(
      `Unsupported value: ${JSON.stringify(value)}: supported values: ${s.enum.map((e: unknown) => JSON.stringify(e)).join(', ')}`,
    );
  if (typeof value === 'string') {
    if (s.maxLength !== undefined && value.length > s.maxLength) add(`Too long: may not be longer than ${s.maxLength}`);
    if (s.minLength !== undefined && value.length < s.minLength) add(`should be at least ${s.minLength} chars long`);
    if (s.pattern !== undefined && !new RegExp(s.pattern).test(value)) add(`should match '${s.pattern}'`);
  }
  if (typeof value === 'number') {
    if (s.minimum !== undefined && value < s.minimum) add(`should be greater than or equal to ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) add(`should be less than or equal to ${s.maximum}`);
  }
  if (Array.isArray(value)) {
    if (s.maxItems !== undefined && value.length > s.maxItems)
      add(`Too many: ${value.length}: must have at most ${s.maxItems} items`);
    if (s.minItems !== undefined && value.length < s.minItems) add(`should have at least ${s.minItems} items`);
    value.forEach((v, i) => issues.push(...validateValue(s.items, v, `${path}[${i}]`, cel)));
  }
  // The apiserver checks metadata as ObjectMeta; a preserve-unknown-fields node keeps anything.
  const opaque = path === '.metadata' || s['x-kubernetes-preserve-unknown-fields'] === true;
  if (s.type === 'object' && value && typeof value === 'object' && !opaque) {
    const obj = value as Obj;
    const keys = Object.keys(obj);
    if (s.maxProperties !== undefined && keys.length > s.maxProperties)
      add(`Too many: ${keys.length}: must have at most ${s.maxProperties} items`);
    for (const r of (s.required ?? []) as string[]) if (obj[r] === undefined) add('Required value', `${path}.${r}`);
    for (const k of keys) {
      const child =
        s.properties?.[k] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
      // The apiserver prunes unknown fields; kubectl (strict field validation, its default) refuses them.
      if (child === undefined) add(`unknown field "${k}"`, `${path}.${k}`);
      else issues.push(...validateValue(child, obj[k], `${path}.${k}`, cel));
    }
  }
  if (cel) {
    for (const rule of (s['x-kubernetes-validations'] ?? []) as Obj[]) {
      let ok: unknown;
      try {
        ok = cel(s, rule.rule)({ self: celValue(s, value) });
      } catch (err) {
        add(`Invalid value: rule ${JSON.stringify(rule.rule)} failed to evaluate: ${(err as Error).message}`);
        continue;
      }
      if (ok !== true) add(`Invalid value: ${rule.message ?? `failed rule: ${rule.rule}`}`);
    }
  }
  return issues;
}

/** A compiled rule at a schema node. */
type CompileRule = (s: Obj, rule: string) => CelProgram;

/** Compiles each rule once, with `self` typed from its schema node, like the apiserver at CRD creation. */
function celCompiler(cel: Cel): CompileRule {
  const programs = new Map<string, CelProgram>();
  return (s, rule) => {
    const type = celType(s);
    const key = `${type}\n${rule}`;
    let program = programs.get(key);
    if (!program) {
      const env = new cel.Environment().registerVariable('self', type);
      const checked = env.check(rule);
      if (!checked.valid)
        throw new Error(`rule ${JSON.stringify(rule)} does not type-check: ${checked.error?.message}`);
      assert.equal(checked.type, 'bool', `rule ${JSON.stringify(rule)} is a bool`);
      program = env.parse(rule);
      programs.set(key, program);
    }
    return program;
  };
}

/** Every node that carries rules, with its path and how often it can occur in one object (the product of maxItems/maxProperties above it). */
function ruleNodes(root: Obj): Array<{ path: string; schema: Obj; cardinality: number }> {
  const found: Array<{ path: string; schema: Obj; cardinality: number }> = [];
  const walk = (s: Obj, path: string, cardinality: number): void => {
    if (s['x-kubernetes-validations']) found.push({ path, schema: s, cardinality });
    for (const [k, child] of Object.entries((s.properties ?? {}) as Obj)) walk(child, `${path}.${k}`, cardinality);
    if (typeof s.additionalProperties === 'object')
      walk(s.additionalProperties, `${path}[*]`, cardinality * (s.maxProperties ?? Infinity));
    if (s.items) walk(s.items, `${path}[]`, cardinality * (s.maxItems ?? Infinity));
  };
  walk(root, '', 1);
  return found;
}

// The apiserver's CEL limits for CRDs (k8s.io/apiserver/pkg/apis/cel/config.go).
const PER_RULE_COST_LIMIT = 10_000_000; // StaticEstimatedCostLimit, one rule times its cardinality
const CRD_COST_LIMIT = 100_000_000; // StaticEstimatedCRDCostLimit, all rules of a CRD

/**
 * An upper bound of one evaluation of a rule, after cel-go's cost model
 * (checker/cost.go) for what these rules use: string sizes come from
 * maxLength, list sizes from maxItems, matches costs
 * ceil(0.1 * string size) * ceil(0.25 * regex size), contains/startsWith/endsWith
 * ceil(0.1 * string size), a list literal 10, `in` a list its size. Anything
 * else throws, so that a new kind of rule gets a cost here before it ships.
 * The apiserver computes the authoritative figure when the CRD is created.
 */
function ruleCost(ast: CelNode, self: Obj): number {
  const sizeOf = (n: CelNode): number => {
    if (n.op === 'id' && n.args === 'self') return self.maxLength ?? self.maxItems ?? self.maxProperties ?? Infinity;
    if (n.op === '.' && (n.args as [CelNode, string])[0].op === 'id') {
      const child = self.properties?.[(n.args as [CelNode, string])[1]] as Obj | undefined;
      return child?.maxLength ?? child?.maxItems ?? child?.maxProperties ?? Infinity;
    }
    if (n.op === 'value' && typeof n.args === 'string') return n.args.length;
    if (n.op === 'list') return (n.args as CelNode[]).length;
    return Infinity;
  };
  const factor = (size: number, f: number): number => Math.ceil(size * f);
  const cost = (n: CelNode): number => {
    switch (n.op) {
      case 'value':
        return 0;
      case 'id':
        return 1;
      case '.':
        return 1 + cost((n.args as [CelNode, string])[0]);
      case 'list':
        return 10 + (n.args as CelNode[]).reduce((sum, a) => sum + cost(a), 0);
      case '!_':
        return 1 + cost(n.args as CelNode);
      case '&&':
      case '||':
      case '==':
      case '!=':
      case '<':
      case '<=':
      case '>':
      case '>=': {
        const [a, b] = n.args as [CelNode, CelNode];
        return 1 + cost(a) + cost(b);
      }
      case '?:': {
        const [c, a, b] = n.args as [CelNode, CelNode, CelNode];
        return 1 + cost(c) + Math.max(cost(a), cost(b));
      }
      case 'in': {
        const [a, list] = n.args as [CelNode, CelNode];
        return 1 + cost(a) + cost(list) + sizeOf(list);
      }
      case 'call': {
        const [name, args] = n.args as [string, CelNode[]];
        if (name === 'size' && args.length === 1) return 1 + cost(args[0]!);
        if (name === 'has' && args.length === 1) return 1;
        throw new Error(`no cost estimate for ${name}()`);
      }
      case 'rcall': {
        const [name, target, args] = n.args as [string, CelNode, CelNode[]];
        const base = 1 + cost(target) + args.reduce((sum, a) => sum + cost(a), 0);
        if (name === 'matches') return base + factor(sizeOf(target), 0.1) * factor(sizeOf(args[0]!), 0.25);
        if (['contains', 'startsWith', 'endsWith'].includes(name)) return base + factor(sizeOf(target), 0.1);
        throw new Error(`no cost estimate for .${name}()`);
      }
      default:
        throw new Error(`no cost estimate for ${n.op}`);
    }
  };
  return cost(ast);
}

/** The whole policy object as the apiserver checks it at admission: defaults, then schema and rules. */
function admit(crd: Obj, cel: CompileRule, spec: unknown): Issue[] {
  const kind = crd.spec.names.kind as string;
  const object: Obj = { apiVersion: `${GROUP}/v1alpha1`, kind, metadata: { name: 'example' }, spec };
  if (crd.spec.scope === 'Namespaced') object.metadata.namespace = 'shop';
  const schema = schemaOf(crd);
  return validateValue(schema, applyDefaults(schema, object), '', cel).map((i) => ({ ...i, path: i.path.slice(1) }));
}

// ---------------------------------------------------------------------------
// helm

test('helm template renders both CRDs with --include-crds (and not without), as the chart ships them; helm lint passes', async (t) => {
  if (!needHelm(t)) return;
  const [plain, withCrds, noPolicies] = await Promise.all([
    template(),
    template([], ['--include-crds']),
    template(['policies.enabled=false'], ['--include-crds']),
  ]);
  assert.equal(plain.objects.filter((o) => o.kind === 'CustomResourceDefinition').length, 0);
  const rendered = withCrds.objects.filter((o) => o.kind === 'CustomResourceDefinition');
  const files = crdFiles();
  assert.deepEqual(rendered.map((o) => o.metadata.name).sort(), [CLUSTER, NAMESPACED]);
  for (const crd of rendered) assert.deepEqual(crd, files.get(crd.metadata.name), `${crd.metadata.name} as shipped`);
  // crds/ is not templated: the CRDs come with policies off too (--skip-crds leaves them out).
  assert.equal(noPolicies.objects.filter((o) => o.kind === 'CustomResourceDefinition').length, 2);
  await Promise.all(
    [[], ['policies.enabled=false']].map(async (sets) => {
      const args = ['lint', '--strict', CHART, '--namespace', NAMESPACE];
      for (const s of sets) args.push('--set', s);
      const { stdout } = await helm(args);
      assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, `lint ${sets.join(' ')}`);
    }),
  );
});

/** The ClusterRole's rules on policies and namespaces, as "group/resource:verb". */
function policyGrants(role: Obj): string[] {
  const grants: string[] = [];
  for (const rule of role.rules)
    for (const g of rule.apiGroups)
      for (const r of rule.resources)
        if (g === GROUP || r === 'namespaces') for (const v of rule.verbs) grants.push(`${g}/${r}:${v}`);
  return grants.sort();
}

test('policies.enabled (default): the agent is told "on" and may list and watch the policies and namespaces, nothing more', async (t) => {
  if (!needHelm(t)) return;
  const { text, objects } = await template();
  assert.equal(one(objects, 'ConfigMap').data.FQDN_EGRESS_POLICIES, 'on');
  const role = one(objects, 'ClusterRole');
  assert.deepEqual(policyGrants(role), [
    '/namespaces:list',
    '/namespaces:watch',
    'fqdn-egress.io/clusterfqdnegresspolicies:list',
    'fqdn-egress.io/clusterfqdnegresspolicies:watch',
    'fqdn-egress.io/fqdnegresspolicies:list',
    'fqdn-egress.io/fqdnegresspolicies:watch',
  ]);
  // The rules are exactly these two, each with its comment.
  const rules = role.rules.filter((r: Obj) => r.apiGroups.includes(GROUP) || r.resources.includes('namespaces'));
  assert.deepEqual(rules, [
    { apiGroups: [GROUP], resources: ['fqdnegresspolicies', 'clusterfqdnegresspolicies'], verbs: ['list', 'watch'] },
    { apiGroups: [''], resources: ['namespaces'], verbs: ['list', 'watch'] },
  ]);
  assert.match(text, /# Read: the policy resources[^\n]*\n\s+- apiGroups: \["fqdn-egress\.io"\]/);
  assert.match(text, /# Read: namespace labels[^\n]*\n\s+- apiGroups: \[""\]\n\s+resources: \["namespaces"\]/);
});

test('policies.enabled=false: the agent is told "off" and gets no RBAC on policies or namespaces', async (t) => {
  if (!needHelm(t)) return;
  const [off, wrongType] = await Promise.all([
    template(['policies.enabled=false']),
    template(['policies.enabled=yes']).then(
      () => undefined,
      (err: Error) => err,
    ),
  ]);
  assert.equal(one(off.objects, 'ConfigMap').data.FQDN_EGRESS_POLICIES, 'off');
  assert.deepEqual(policyGrants(one(off.objects, 'ClusterRole')), []);
  assert.doesNotMatch(off.text, /fqdn-egress\.io"\]|namespaces/);
  assert.ok(wrongType instanceof Error, 'policies.enabled=yes is refused');
  assert.match(wrongType.message, /\/policies\/enabled.*want boolean/);
});

test('NOTES.txt points at the policy resources when they are on', async (t) => {
  if (!needHelm(t)) return;
  const notes = async (sets: string[]): Promise<string> => {
    const args = ['install', RELEASE, CHART, '--namespace', NAMESPACE, '--dry-run=client'];
    for (const s of sets) args.push('--set', s);
    const { stdout } = await helm(args);
    return stdout.slice(stdout.indexOf('NOTES:'));
  };
  const [on, off] = await Promise.all([notes([]), notes(['policies.enabled=false'])]);
  assert.match(on, /FQDNEgressPolicy/);
  assert.match(on, /kubectl get fqdnegresspolicies -A/);
  assert.doesNotMatch(off, /FQDNEgressPolicy/);
});

// ---------------------------------------------------------------------------
// The CRDs as objects

test('the CRDs: names, scope, one served version, printer columns, no status; valid CustomResourceDefinition objects', () => {
  const crds = crdFiles();
  assert.deepEqual([...crds.keys()].sort(), [CLUSTER, NAMESPACED]);
  const expected: Record<string, { names: Obj; scope: string; columns: string[] }> = {
    [NAMESPACED]: {
      names: {
        kind: 'FQDNEgressPolicy',
        listKind: 'FQDNEgressPolicyList',
        plural: 'fqdnegresspolicies',
        singular: 'fqdnegresspolicy',
        shortNames: ['fep'],
      },
      scope: 'Namespaced',
      columns: ['Pod-Selector', 'Names', 'Mode', 'Age'],
    },
    [CLUSTER]: {
      names: {
        kind: 'ClusterFQDNEgressPolicy',
        listKind: 'ClusterFQDNEgressPolicyList',
        plural: 'clusterfqdnegresspolicies',
        singular: 'clusterfqdnegresspolicy',
        shortNames: ['cfep'],
      },
      scope: 'Cluster',
      columns: ['Pod-Selector', 'Namespace-Selector', 'Names', 'Mode', 'Age'],
    },
  };
  const paths: Record<string, string> = {
    'Pod-Selector': '.spec.podSelector.matchLabels',
    'Namespace-Selector': '.spec.namespaceSelector.matchLabels',
    Names: '.spec.egress[*].names',
    Mode: '.spec.mode',
    Age: '.metadata.creationTimestamp',
  };
  for (const [name, crd] of crds) {
    assert.doesNotThrow(() => new CustomResourceDefinition(crd as never).validate(), `${name} is a valid CRD object`);
    assert.equal(crd.apiVersion, 'apiextensions.k8s.io/v1');
    assert.equal(crd.spec.group, GROUP);
    assert.equal(name, `${crd.spec.names.plural}.${GROUP}`);
    assert.deepEqual(crd.spec.names, expected[name]!.names);
    assert.equal(crd.spec.scope, expected[name]!.scope);
    assert.equal(crd.spec.versions.length, 1);
    const version = crd.spec.versions[0];
    assert.equal(version.name, 'v1alpha1');
    assert.equal(version.served, true);
    assert.equal(version.storage, true);
    assert.equal(version.subresources, undefined, 'no status subresource: the agent only reads');
    const columns = version.additionalPrinterColumns as Obj[];
    assert.deepEqual(
      columns.map((c) => c.name),
      expected[name]!.columns,
    );
    for (const c of columns) {
      assert.equal(c.jsonPath, paths[c.name], `column ${c.name}`);
      assert.equal(c.type, c.name === 'Age' ? 'date' : 'string', `column ${c.name} type`);
    }
  }
});

test('both CRDs are structural schemas', () => {
  for (const [name, crd] of crdFiles()) assert.deepEqual(structuralErrors(schemaOf(crd)), [], name);
});

test('the structural checker refuses what the apiserver refuses', () => {
  const wrap = (spec: Obj, metadata: Obj = { type: 'object' }): Obj => ({
    type: 'object',
    properties: { metadata, spec },
  });
  const cases: Array<[string, Obj, RegExp]> = [
    ['a node without type', wrap({ type: 'object', properties: { a: {} } }), /spec\.a: type must be set/],
    [
      'properties beside additionalProperties',
      wrap({ type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'string' } }),
      /mutually exclusive/,
    ],
    ['additionalProperties: false', wrap({ type: 'object', additionalProperties: false }), /cannot be false/],
    ['$ref', wrap({ type: 'object', $ref: '#/definitions/x' }), /"\$ref" is forbidden/],
    ['definitions', wrap({ type: 'object', definitions: {} }), /"definitions" is forbidden/],
    ['dependencies', wrap({ type: 'object', dependencies: {} }), /"dependencies" is forbidden/],
    ['id', wrap({ type: 'object', id: 'x' }), /"id" is forbidden/],
    ['uniqueItems: true', wrap({ type: 'array', items: { type: 'string' }, uniqueItems: true }), /uniqueItems/],
    ['items as a list', wrap({ type: 'array', items: [{ type: 'string' }] }), /items must be one schema/],
    ['an array without items', wrap({ type: 'array' }), /an array needs items/],
    ['type in anyOf', wrap({ type: 'string', anyOf: [{ type: 'string' }] }), /"type" is not allowed inside/],
    ['an unknown keyword', wrap({ type: 'string', patern: 'x' }), /unknown schema field "patern"/],
    ['a default off its enum', wrap({ type: 'string', enum: ['a'], default: 'b' }), /default is not valid/],
    [
      'metadata restricting labels',
      wrap({ type: 'object' }, { type: 'object', properties: { labels: { type: 'object' } } }),
      /only name and generateName/,
    ],
    ['metadata with a default', wrap({ type: 'object' }, { type: 'object', default: {} }), /"default" is not allowed/],
    ['a rule without rule', wrap({ type: 'string', 'x-kubernetes-validations': [{ message: 'm' }] }), /rule must be/],
  ];
  for (const [what, schema, pattern] of cases) {
    const errors = structuralErrors(schema);
    assert.ok(
      errors.some((e) => pattern.test(e)),
      `${what}: expected ${pattern}, got ${JSON.stringify(errors)}`,
    );
  }
  // The forms it must let through.
  const fine = wrap({
    type: 'object',
    properties: {
      port: { 'x-kubernetes-int-or-string': true },
      free: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
      labels: { type: 'object', additionalProperties: { type: 'string' } },
    },
  });
  assert.deepEqual(structuralErrors(fine), []);
});

test('the cluster policy has the namespaced spec plus namespaceSelector, a copy of podSelector', () => {
  const crds = crdFiles();
  // Descriptions differ (namespace or cluster wording); the rules may not.
  const strip = (s: unknown): unknown =>
    Array.isArray(s)
      ? s.map(strip)
      : s && typeof s === 'object'
        ? Object.fromEntries(Object.entries(s).flatMap(([k, v]) => (k === 'description' ? [] : [[k, strip(v)]])))
        : s;
  const namespaced = schemaOf(crds.get(NAMESPACED)!).properties.spec;
  const cluster = structuredClone(schemaOf(crds.get(CLUSTER)!).properties.spec);
  const namespaceSelector = cluster.properties.namespaceSelector;
  assert.ok(namespaceSelector, 'the cluster policy has namespaceSelector');
  assert.equal(namespaced.properties.namespaceSelector, undefined, 'the namespaced policy has none');
  assert.ok(!cluster.required.includes('namespaceSelector'), 'namespaceSelector is optional');
  assert.deepEqual(strip(namespaceSelector), strip(cluster.properties.podSelector));
  delete cluster.properties.namespaceSelector;
  assert.deepEqual(strip(cluster), strip(namespaced));
});

// ---------------------------------------------------------------------------
// Admission: the CEL rules and the OpenAPI keywords together

const WIDE_NAME = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`; // 253 bytes

const GOOD_SPECS: Array<[string, Obj]> = [
  ['the smallest policy', { podSelector: {}, egress: [{ names: ['api.stripe.com'] }] }],
  ['no egress: DNS only', { podSelector: {} }],
  ['an empty egress: DNS only', { podSelector: {}, egress: [] }],
  [
    'every field',
    {
      podSelector: {
        matchLabels: { app: 'payments', 'app.kubernetes.io/part-of': 'shop' },
        matchExpressions: [
          { key: 'tier', operator: 'In', values: ['backend', 'worker'] },
          { key: 'example.com/canary', operator: 'DoesNotExist' },
          { key: 'team', operator: 'NotIn', values: ['x'] },
          { key: 'owner', operator: 'Exists', values: [] },
        ],
      },
      egress: [
        {
          names: ['api.stripe.com', '*.kadath.io'],
          ports: [
            { port: 443, protocol: 'TLS' },
            { port: 53, protocol: 'UDP' },
            { port: 8443, protocol: 'TCP' },
            { port: 1 },
            { port: 65535 },
          ],
        },
        { names: ['_dmarc.Example.COM', 'a-b_c.d1'] },
      ],
      mode: 'audit',
      dnsFilter: 'off',
    },
  ],
  ['a 253-byte name of 63-byte labels', { podSelector: {}, egress: [{ names: [WIDE_NAME, `*.${'x'.repeat(63)}`] }] }],
  [
    '8 ports, 64 names, 64 entries',
    {
      podSelector: {},
      egress: Array.from({ length: 64 }, (_, i) => ({
        names: Array.from({ length: 64 }, (_, j) => `n${j}.e${i}.example`),
        ports: Array.from({ length: 8 }, (_, k) => ({ port: 8000 + k })),
      })),
    },
  ],
  ['a one-label name', { podSelector: {}, egress: [{ names: ['localhost'], ports: [] }] }],
];

/** A spec with one egress entry of these names (and ports). */
const names = (list: string[], ports?: Obj[]): Obj => ({
  podSelector: {},
  egress: [{ names: list, ...(ports ? { ports } : {}) }],
});

const WILDCARD = 'a wildcard is only a leading "*." followed by a name, as in *.example.com';
const EMPTY_LABEL = 'a name has no empty label: no leading or trailing dot, no two dots in a row';
const LONG_LABEL = "a name's labels are at most 63 bytes";
const VALUES = 'In and NotIn need at least one value; Exists and DoesNotExist take none';

/** [what, spec, path of the issue, the issue's message (a substring)]. */
const BAD_SPECS: Array<[string, Obj, string, string]> = [
  ['a 254-byte name', names([`${WIDE_NAME}e`]), 'spec.egress[0].names[0]', 'Too long: may not be longer than 253'],
  ['a 64-byte label', names([`${'a'.repeat(64)}.com`]), 'spec.egress[0].names[0]', LONG_LABEL],
  ['a 64-byte last label', names([`example.${'a'.repeat(64)}`]), 'spec.egress[0].names[0]', LONG_LABEL],
  ['an empty name', names(['']), 'spec.egress[0].names[0]', 'should be at least 1 chars long'],
  ['two dots', names(['a..com']), 'spec.egress[0].names[0]', EMPTY_LABEL],
  ['a leading dot', names(['.a.com']), 'spec.egress[0].names[0]', EMPTY_LABEL],
  ['a trailing dot', names(['a.com.']), 'spec.egress[0].names[0]', EMPTY_LABEL],
  ['a.*.com', names(['a.*.com']), 'spec.egress[0].names[0]', WILDCARD],
  ['a*.b.com', names(['x.com', 'a*.b.com']), 'spec.egress[0].names[1]', WILDCARD],
  ['*.*.b', names(['*.*.b']), 'spec.egress[0].names[0]', WILDCARD],
  ['*', names(['*']), 'spec.egress[0].names[0]', WILDCARD],
  ['*.', names(['*.']), 'spec.egress[0].names[0]', WILDCARD],
  ['*a.com', names(['*a.com']), 'spec.egress[0].names[0]', WILDCARD],
  ['a space', names(['a b.com']), 'spec.egress[0].names[0]', 'should match'],
  ['a non-ASCII letter', names(['bücher.de']), 'spec.egress[0].names[0]', 'should match'],
  ['a port and a slash', names(['a.com:443']), 'spec.egress[0].names[0]', 'should match'],
  ['port 0', names(['a.com'], [{ port: 0 }]), 'spec.egress[0].ports[0].port', 'greater than or equal to 1'],
  ['port 65536', names(['a.com'], [{ port: 65536 }]), 'spec.egress[0].ports[0].port', 'less than or equal to 65535'],
  ['a port as a string', names(['a.com'], [{ port: '443' }]), 'spec.egress[0].ports[0].port', 'of type integer'],
  ['a fractional port', names(['a.com'], [{ port: 44.3 }]), 'spec.egress[0].ports[0].port', 'of type integer'],
  ['a port entry without port', names(['a.com'], [{ protocol: 'TCP' }]), 'spec.egress[0].ports[0].port', 'Required'],
  ['SCTP', names(['a.com'], [{ port: 1, protocol: 'SCTP' }]), 'spec.egress[0].ports[0].protocol', 'Unsupported value'],
  [
    'tcp (lowercase)',
    names(['a.com'], [{ port: 1, protocol: 'tcp' }]),
    'spec.egress[0].ports[0].protocol',
    'Unsupported',
  ],
  [
    '9 ports',
    names(
      ['a.com'],
      Array.from({ length: 9 }, (_, i) => ({ port: 1 + i })),
    ),
    'spec.egress[0].ports',
    'Too many: 9: must have at most 8 items',
  ],
  ['no names', names([]), 'spec.egress[0].names', 'should have at least 1 items'],
  ['65 names', names(Array.from({ length: 65 }, (_, i) => `n${i}.com`)), 'spec.egress[0].names', 'at most 64 items'],
  [
    '65 egress entries',
    { podSelector: {}, egress: Array.from({ length: 65 }, () => ({ names: ['a.com'] })) },
    'spec.egress',
    'at most 64 items',
  ],
  ['no podSelector', { egress: [{ names: ['a.com'] }] }, 'spec.podSelector', 'Required value'],
  [
    'an unknown operator',
    {
      podSelector: { matchExpressions: [{ key: 'app', operator: 'Equals', values: ['a'] }] },
      egress: [{ names: ['a'] }],
    },
    'spec.podSelector.matchExpressions[0].operator',
    'Unsupported value: "Equals"',
  ],
  [
    'In without values',
    { podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] }, egress: [{ names: ['a'] }] },
    'spec.podSelector.matchExpressions[0]',
    VALUES,
  ],
  [
    'NotIn with no values',
    { podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: [] }] }, egress: [{ names: ['a'] }] },
    'spec.podSelector.matchExpressions[0]',
    VALUES,
  ],
  [
    'Exists with values',
    {
      podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists', values: ['a'] }] },
      egress: [{ names: ['a'] }],
    },
    'spec.podSelector.matchExpressions[0]',
    VALUES,
  ],
  [
    'a bad label key',
    { podSelector: { matchExpressions: [{ key: 'a b', operator: 'Exists' }] }, egress: [{ names: ['a'] }] },
    'spec.podSelector.matchExpressions[0].key',
    'should match',
  ],
  [
    'a bad label value',
    { podSelector: { matchLabels: { app: '-x' } }, egress: [{ names: ['a'] }] },
    'spec.podSelector.matchLabels.app',
    'should match',
  ],
  ['mode block', { podSelector: {}, egress: [{ names: ['a'] }], mode: 'block' }, 'spec.mode', 'Unsupported value'],
  [
    'dnsFilter as a YAML boolean',
    { podSelector: {}, egress: [{ names: ['a'] }], dnsFilter: true },
    'spec.dnsFilter',
    'must be of type string',
  ],
  [
    'an unknown field',
    { podSelector: {}, egress: [{ names: ['a'], port: 443 }] },
    'spec.egress[0].port',
    'unknown field',
  ],
];

test('good policies are admitted, with mode and dnsFilter defaulted', async (t) => {
  const cel = await needCel(t);
  if (!cel) return;
  const compile = celCompiler(cel);
  for (const crd of crdFiles().values()) {
    for (const [what, spec] of GOOD_SPECS) {
      assert.deepEqual(admit(crd, compile, spec), [], `${crd.spec.names.kind}: ${what}`);
    }
    const schema = schemaOf(crd);
    const defaulted = applyDefaults(schema, { spec: GOOD_SPECS[0]![1] }) as Obj;
    assert.equal(defaulted.spec.mode, 'enforce');
    assert.equal(defaulted.spec.dnsFilter, 'on');
  }
  const cluster = crdFiles().get(CLUSTER)!;
  for (const namespaceSelector of [
    {},
    { matchLabels: { 'kubernetes.io/metadata.name': 'shop' } },
    { matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['dev'] }] },
  ])
    assert.deepEqual(admit(cluster, compile, { ...GOOD_SPECS[0]![1], namespaceSelector }), [], 'namespaceSelector');
});

test('bad policies are refused, each with its message at its field', async (t) => {
  const cel = await needCel(t);
  if (!cel) return;
  const compile = celCompiler(cel);
  for (const crd of crdFiles().values()) {
    for (const [what, spec, path, message] of BAD_SPECS) {
      const issues = admit(crd, compile, spec);
      assert.ok(
        issues.some((i) => i.path === path && i.message.includes(message)),
        `${crd.spec.names.kind}: ${what}: expected "${message}" at ${path}, got ${JSON.stringify(issues)}`,
      );
    }
  }
  // A namespaced policy has no namespaceSelector; the cluster one checks it like podSelector.
  const spec = { ...GOOD_SPECS[0]![1], namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'In' }] } };
  assert.deepEqual(admit(crdFiles().get(NAMESPACED)!, compile, spec), [
    { path: 'spec.namespaceSelector', message: 'unknown field "namespaceSelector"' },
  ]);
  assert.deepEqual(admit(crdFiles().get(CLUSTER)!, compile, spec), [
    { path: 'spec.namespaceSelector.matchExpressions[0]', message: `Invalid value: ${VALUES}` },
  ]);
});

test('each name rule alone: the CEL rules say what is wrong with a name', async (t) => {
  const cel = await needCel(t);
  if (!cel) return;
  const compile = celCompiler(cel);
  const nameSchema = schemaOf(crdFiles().get(NAMESPACED)!).properties.spec.properties.egress.items.properties.names
    .items as Obj;
  const failed = (name: string): string[] =>
    (nameSchema['x-kubernetes-validations'] as Obj[])
      .filter((rule) => compile(nameSchema, rule.rule)({ self: name }) !== true)
      .map((rule) => rule.message as string);
  const table: Array<[string, string[]]> = [
    ['api.stripe.com', []],
    ['*.kadath.io', []],
    ['*.io', []],
    ['API.Stripe.COM', []],
    [`${'a'.repeat(63)}.com`, []],
    [`${'a'.repeat(64)}.com`, [LONG_LABEL]],
    [`*.${'a'.repeat(64)}`, [LONG_LABEL]],
    ['a..b', [EMPTY_LABEL]],
    ['a.b.', [EMPTY_LABEL]],
    ['.a', [EMPTY_LABEL]],
    ['a*.b.com', [WILDCARD]],
    ['*.*.b', [WILDCARD]],
    ['*', [WILDCARD]],
    ['*.', [WILDCARD, EMPTY_LABEL]],
    ['**.a', [WILDCARD]],
    ['a.*', [WILDCARD]],
  ];
  for (const [name, expected] of table) assert.deepEqual(failed(name), expected, name);
});

test('the CEL rules type-check, use regexes that mean the same in RE2 and JavaScript, and stay within the cost limits', async (t) => {
  const cel = await needCel(t);
  if (!cel) return;
  const compile = celCompiler(cel);
  for (const [name, crd] of crdFiles()) {
    let total = 0;
    for (const { path, schema, cardinality } of ruleNodes(schemaOf(crd))) {
      assert.ok(Number.isFinite(cardinality), `${name} ${path}: every list and map above a rule has maxItems`);
      for (const rule of schema['x-kubernetes-validations'] as Obj[]) {
        assert.ok(typeof rule.message === 'string' && rule.message.length > 0, `${path}: the rule has a message`);
        const program = compile(schema, rule.rule);
        // RE2 (the apiserver) has no lookaround or backreferences; JavaScript (this evaluator) has.
        for (const re of String(rule.rule).match(/matches\('([^']*)'\)/g) ?? [])
          assert.doesNotMatch(re, /\(\?[=!<]|\\[1-9]/, `${path}: ${re} is plain RE2`);
        const cost = ruleCost(program.ast, schema) * cardinality;
        assert.ok(Number.isFinite(cost) && cost <= PER_RULE_COST_LIMIT, `${name} ${path}: ${rule.rule}: cost ${cost}`);
        t.diagnostic(`${name} ${path}: estimated cost ${cost} (${cardinality} x one evaluation)`);
        total += cost;
      }
    }
    assert.ok(total <= CRD_COST_LIMIT, `${name}: all rules cost ${total}`);
  }
});
