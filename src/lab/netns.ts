/**
 * Builds and removes a site's namespaces with iproute2. This module owns every `ip`
 * invocation of the lab. The batches are pure functions of the site (unit-tested); running
 * them is a handful of `ip -batch` processes: one for the namespaces, one in the switch
 * namespace for bridges and veths (each veth end is created directly inside its namespace,
 * so nothing ever appears in the host's namespace), one per host for addresses and routes.
 */
import { spawn } from 'node:child_process';
import { type Host, type Site, SWITCH_HOST, host as siteHost, switchPortName } from './site.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a program to completion; `input` goes to its stdin. Never throws on a non-zero exit. */
export function run(program: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new Error(`${program} ${args.join(' ')}: ${e.message}`)));
    child.on('close', (code, signal) =>
      resolve({
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        code: code ?? (signal ? 128 : 1),
      }),
    );
    child.stdin.on('error', () => {}); // the program may exit before reading everything
    child.stdin.end(input ?? '');
  });
}

/** Runs `ip`; a failure names the command and, for a batch, the failing line. */
export async function ip(args: string[], batch?: string[]): Promise<string> {
  const input = batch ? batch.join('\n') + '\n' : undefined;
  const fullArgs = batch ? [...args, '-batch', '-'] : args;
  const r = await run('ip', fullArgs, input);
  if (r.code !== 0) {
    const where = /Command failed -:(\d+)/.exec(r.stderr);
    const line = where && batch ? ` (batch line ${where[1]}: '${batch[Number(where[1]) - 1]}')` : '';
    throw new Error(`ip ${fullArgs.join(' ')} failed${line}: ${r.stderr.trim()}`);
  }
  return r.stdout;
}

// --- the plan: pure ------------------------------------------------------------------------

/** Bridges and every veth, run inside the switch namespace. */
export function switchBatch(site: Site): string[] {
  const lines: string[] = [];
  for (const s of site.segments) {
    // No STP (a star has no loops) and no multicast snooping: VRRP adverts (224.0.0.18)
    // and gratuitous ARP must reach every port at once.
    lines.push(`link add ${s.bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0`);
    lines.push(`link set ${s.bridge} up`);
  }
  for (const h of site.hosts) {
    for (const i of h.interfaces) {
      if ('segment' in i.attach) {
        const segment = i.attach.segment;
        const bridge = site.segments.find((s) => s.name === segment)?.bridge;
        if (!bridge) throw new Error(`lab ${site.name}: ${h.name}/${i.name} names unknown segment '${segment}'`);
        const port = switchPortName(h.name, segment);
        lines.push(`link add ${port} type veth peer name ${i.name} netns ${h.namespace}`);
        lines.push(`link set ${port} master ${bridge} up`);
      } else if (h.name < i.attach.host) {
        // A point-to-point pair: created once, both ends born in their namespaces.
        const peer = siteHost(site, i.attach.host);
        lines.push(`link add ${i.name} netns ${h.namespace} type veth peer name ${i.attach.interface} netns ${peer.namespace}`);
      }
    }
  }
  return lines;
}

/** Addresses, links up and routes of one host, run inside its namespace. */
export function hostBatch(h: Host): string[] {
  const lines = ['link set lo up'];
  for (const i of h.interfaces) {
    lines.push(`addr add ${i.address}/${i.prefixLength} dev ${i.name}`);
    lines.push(`link set ${i.name} up`);
  }
  for (const r of h.routes) lines.push(`route add ${r.to} via ${r.via}`);
  return lines;
}

/**
 * Kernel settings of one namespace, applied before its interfaces exist so that `default`
 * covers them. New namespaces inherit IPv4 settings from the host's (devconf_inherit_init_net
 * 0): a host that forwards, or filters by reverse path, must not change the lab, so both are
 * set here. No IPv6: the site is IPv4 (no router solicitations or DAD on the segments).
 */
export function hostSysctls(h: Host): Record<string, string> {
  return {
    'net.ipv6.conf.all.disable_ipv6': '1',
    'net.ipv6.conf.default.disable_ipv6': '1',
    'net.ipv4.ip_forward': h.forwarding ? '1' : '0',
    'net.ipv4.conf.all.rp_filter': '0',
    'net.ipv4.conf.default.rp_filter': '0',
  };
}

// --- running it ----------------------------------------------------------------------------

export async function listNamespaces(): Promise<string[]> {
  const out = await ip(['-j', 'netns', 'list']);
  if (!out.trim()) return [];
  return (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name);
}

export async function setSysctls(namespace: string, settings: Record<string, string>): Promise<void> {
  const pairs = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  if (pairs.length === 0) return;
  const r = await run('ip', ['netns', 'exec', namespace, 'sysctl', '-q', '-w', ...pairs]);
  if (r.code !== 0) throw new Error(`sysctl in ${namespace} (${pairs.join(' ')}): ${r.stderr.trim()}`);
}

/** Builds the whole site. Its namespaces must not exist yet (the caller removes leftovers). */
export async function buildSite(site: Site): Promise<void> {
  await ip([], site.hosts.map((h) => `netns add ${h.namespace}`));
  await Promise.all(site.hosts.map((h) => setSysctls(h.namespace, hostSysctls(h))));
  await ip(['-n', siteHost(site, SWITCH_HOST).namespace], switchBatch(site));
  await Promise.all(site.hosts.filter((h) => h.interfaces.length > 0).map((h) => ip(['-n', h.namespace], hostBatch(h))));
}

/** PIDs of every process living in a namespace. */
export async function namespacePids(namespace: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', namespace]);
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Deletes namespaces (those that exist); their interfaces go with them. */
export async function deleteNamespaces(names: string[]): Promise<void> {
  const existing = new Set(await listNamespaces());
  const doomed = names.filter((n) => existing.has(n));
  if (doomed.length === 0) return;
  await ip([], doomed.map((n) => `netns del ${n}`));
}
