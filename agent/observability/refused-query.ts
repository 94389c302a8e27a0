/*
 * What a refused DNS query asked for, or which server name a refused TLS
 * flow's ClientHello sent, for egressctl drops and the agent's log: the
 * kernel keeps the name in fqe_dns_refused, keyed like the event (time,
 * identity, source port). Shown escaped: a pod chooses these bytes.
 */
import type { BpfMap } from '../datapath/bpf-map.js';
import type { DropEvent, RefusedKey, RefusedName } from '../datapath/codecs.js';
import { escapeWireName, qtypeName } from '../dns/presentation.js';

export interface RefusedQuery {
  /** the question name, escaped; "(not one plain question)" when the kernel could not read one; null when no longer kept */
  name: string | null;
  /** A, TXT, ...; null when unknown */
  queryType: string | null;
}

export function refusedQueryOf(refused: Pick<BpfMap<RefusedKey, RefusedName>, 'get'>, e: DropEvent): RefusedQuery {
  const q = refused.get({ tsNs: e.tsNs, identity: e.identity, sport: e.sport });
  if (!q) return { name: null, queryType: null }; // pushed out by newer refusals
  if (!q.wire) return { name: '(not one plain question)', queryType: null };
  return { name: escapeWireName(q.wire), queryType: qtypeName(q.qtype) };
}

/** The server name a refused TLS flow sent (tls-server-name events). */
export function refusedServerNameOf(refused: Pick<BpfMap<RefusedKey, RefusedName>, 'get'>, e: DropEvent): RefusedQuery {
  const q = refused.get({ tsNs: e.tsNs, identity: e.identity, sport: e.sport });
  if (!q) return { name: null, queryType: null }; // pushed out by newer refusals
  if (!q.wire) return { name: '(no server name)', queryType: null };
  return { name: escapeWireName(q.wire), queryType: null };
}
