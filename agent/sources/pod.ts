/*
 * What a source says about a pod on this node. Sources (file, Kubernetes)
 * produce complete snapshots of these; the endpoint manager acts on them.
 */
export interface PodSpec {
  namespace: string;
  name: string;
  /** the pod's own addresses (IPv4 and/or IPv6) */
  ips: string[];
  /** host-side interface, when the source knows it */
  interface?: string;
  annotations: Record<string, string>;
  /** the pod's labels (policy resources select pods by them) */
  labels?: Record<string, string>;
}

/**
 * The policy resources and namespace labels, as the API holds them (raw
 * objects: policy/resources.ts reads them). A source without policies
 * reports empty lists.
 */
export interface PolicyObjects {
  /** FQDNEgressPolicy objects */
  namespaced: unknown[];
  /** ClusterFQDNEgressPolicy objects */
  cluster: unknown[];
  /** namespace name -> its labels */
  namespaces: Record<string, Record<string, string>>;
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}
