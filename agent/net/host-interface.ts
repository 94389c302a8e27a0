/*
 * Finds a pod's host-side interface from the route to its IP, the way a CNI
 * leaves it: a /32 or /128 route to a veth, or a route to a bridge, where
 * the neighbour table gives the pod's MAC and the bridge's forwarding table
 * the port. Runs iproute2 in the agent's own network namespace.
 */
import { execFile } from 'node:child_process';

export interface HostInterface {
  ifname: string;
  ifindex: number;
}

export type Lookup = { found: HostInterface } | { missing: string };

function ipJson<T>(cmd: string, args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(cmd, ['-j', ...args], { timeout: 5000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      try {
        resolve((stdout.trim() === '' ? [] : JSON.parse(stdout)) as T);
      } catch (e) {
        reject(new Error(`${cmd} ${args.join(' ')}: unreadable output: ${(e as Error).message}`));
      }
    });
  });
}

interface Link {
  ifindex: number;
  ifname: string;
  linkinfo?: { info_kind?: string };
}

async function link(name: string): Promise<Link | undefined> {
  const links = await ipJson<Link[]>('ip', ['-d', 'link', 'show', 'dev', name]).catch(() => []);
  return links[0];
}

/** An interface by name, or why it cannot be used. */
export async function interfaceByName(name: string): Promise<Lookup> {
  const l = await link(name);
  return l
    ? { found: { ifname: l.ifname, ifindex: l.ifindex } }
    : { missing: `interface ${name} does not exist (yet)` };
}

/** The host-side interface the route to `ip` leaves through. */
export async function interfaceForIp(ip: string): Promise<Lookup> {
  const routes = await ipJson<Array<{ dev?: string; gateway?: string; type?: string }>>('ip', [
    'route',
    'get',
    ip,
  ]).catch((err: Error) => err);
  if (routes instanceof Error) return { missing: `no route to ${ip}: ${routes.message}` };
  const route = routes[0];
  if (!route?.dev) return { missing: `no route to ${ip}` };
  if (route.type === 'local' || route.dev === 'lo')
    return { missing: `${ip} is an address of this node, not of a pod` };
  if (route.gateway) return { missing: `${ip} is routed through ${route.gateway}: not a pod on this node` };
  const dev = await link(route.dev);
  if (!dev) return { missing: `interface ${route.dev} vanished` };
  if (dev.linkinfo?.info_kind !== 'bridge') return { found: { ifname: dev.ifname, ifindex: dev.ifindex } };

  // Behind a bridge: neighbour table -> MAC -> bridge port.
  const neigh = await ipJson<Array<{ lladdr?: string }>>('ip', ['neigh', 'show', 'to', ip, 'dev', dev.ifname]).catch(
    () => [],
  );
  const mac = neigh.find((n) => n.lladdr)?.lladdr;
  if (!mac) return { missing: `${ip} is behind bridge ${dev.ifname} and its MAC is not known yet` };
  const fdb = await ipJson<Array<{ mac: string; ifname?: string; master?: string }>>('bridge', [
    'fdb',
    'show',
    'br',
    dev.ifname,
  ]).catch(() => []);
  const port = fdb.find((e) => e.mac === mac && e.ifname && e.ifname !== dev.ifname)?.ifname;
  if (!port) return { missing: `${ip} (${mac}) is behind bridge ${dev.ifname} but no port has learned it yet` };
  return interfaceByName(port);
}
