/*
 * Child process for the "pins outlive their loader" test: loads the datapath
 * into a pin dir, attaches it to one interface in a namespace, enforces one
 * identity there, and exits.
 * argv: PIN_DIR NETNS_PATH IFINDEX IDENTITY ADDR...
 */
import { Datapath } from '../../agent/datapath/datapath.js';
import { parseIp } from '../../agent/net/addr.js';
import { EndpointFlag } from '../../agent/datapath/codecs.js';

const [pinDir, netns, ifindex, identity, ...addrs] = process.argv.slice(2);
if (!pinDir || !netns || !ifindex || !identity) {
  process.stderr.write('usage: load-and-exit PIN_DIR NETNS_PATH IFINDEX IDENTITY ADDR...\n');
  process.exit(2);
}
const dp = Datapath.load(pinDir);
dp.attach(Number(ifindex), { netns });
for (const a of addrs) dp.maps.owners.set({ identity: Number(identity), addr: parseIp(a) }, 1);
dp.maps.endpoints.set(Number(ifindex), { identity: Number(identity), flags: EndpointFlag.enforce });
dp.close();
