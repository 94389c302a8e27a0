/*
 * What several maps share: the port rule (fqe_allow, fqe_policy, the
 * learned records), the kernel's name length, the protocol numbers. Pure.
 */
import { struct, u8, u16, pad, type ValueOf } from '../layout.js';

/** FQE_MAX_PORT_RULES: port rules an allow entry or a name rule holds */
export const MAX_PORT_RULES = 8;
/** FQE_NAME_LEN: bytes of a name in the kernel (fqe_name, fqe_policy_val.name) */
export const NAME_LEN = 256;

export const IPPROTO = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58 } as const;
/** fqe_port_rule.proto of a `tls` rule: TCP once the ClientHello named an allowed server (not an IP protocol). */
export const PROTO_TLS = 0xfe;

/** One allowed port; proto 0 = TCP and UDP. */
export const portRuleCodec = struct('port_rule', { port: u16, proto: u8, pad: pad(1) });
export type PortRule = ValueOf<typeof portRuleCodec>;
