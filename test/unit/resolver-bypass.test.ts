/* Unit tests of the check for DNS servers that --allow-cidrs opens (agent/net/resolver-bypass.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nameserversOf, openResolvers } from '../../agent/net/resolver-bypass.js';
import { parseCidr } from '../../agent/net/addr.js';

test('resolv.conf nameservers: addresses only, zone ids dropped, other lines ignored', () => {
  const conf =
    '# generated\nsearch shop.svc.cluster.local\nnameserver 192.0.2.53\n  nameserver   2001:db8::53%eth0\nnameserver dns.example\noptions ndots:5\n';
  assert.deepEqual(nameserversOf(conf), ['192.0.2.53', '2001:db8::53']);
  assert.deepEqual(nameserversOf(''), []);
});

test('a prefix covering a DNS server that is not trusted is reported; trusted ones, other families and uncovered ones are not', () => {
  const cidrs = ['192.0.2.0/24', '198.51.100.7/32', '2001:db8::/32', '::/0'].map(parseCidr);
  const servers = ['192.0.2.53', '198.51.100.7', '198.51.100.8', '203.0.113.53', '2001:db8::53', '2001:db8::54'];
  assert.deepEqual(openResolvers(cidrs, servers, ['2001:db8::54', '198.51.100.8']), [
    { cidr: '192.0.2.0/24', resolver: '192.0.2.53' },
    { cidr: '198.51.100.7', resolver: '198.51.100.7' },
    { cidr: '2001:db8::/32', resolver: '2001:db8::53' },
    { cidr: '::/0', resolver: '2001:db8::53' },
  ]);
  assert.deepEqual(
    openResolvers(cidrs, ['192.0.2.53'], ['192.0.2.53']),
    [],
    'a trusted resolver inside a prefix is fine',
  );
  assert.deepEqual(
    openResolvers([parseCidr('0.0.0.0/0')], ['2001:db8::53'], []),
    [],
    'an IPv4 prefix never covers IPv6',
  );
  assert.deepEqual(openResolvers([], ['192.0.2.53'], []), []);
});
