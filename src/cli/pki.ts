/**
 * `vipshift pki init --dir DIR [--peers lb1:appliance,ctl:controller,...] [--force]`: creates the
 * cluster's credentials — an Ed25519 key pair per member and the trust list with every
 * member's role (src/api/auth.ts, docs/api.md). Give each box its own `<identity>.key` and the
 * common `peers.json`; the operator's key (role admin) stays on the operator's machine.
 *
 * `vipshift pki etcd --dir DIR --members ctl1=192.0.2.2,... [--clients ctl1,...] [--force]`: the
 * TLS material of the controllers' etcd cluster (src/api/etcd-pki.ts) in DIR/etcd: a CA, a
 * certificate per member for the addresses named, a client certificate per controller (by
 * default one per member: the controllers run on the members' boxes).
 */
import { parseArgs } from 'node:util';
import { ROLES, createClusterCredentials, isRole, type Role } from '../api/auth.js';
import { createEtcdPki, etcdPkiDir, type EtcdMemberSpec } from '../api/etcd-pki.js';
import { createMetricsToken } from '../metrics/listener.js';

/** The lab's members (lb1, lb2, the controller, three servers) and the operator's CLI. */
export const DEFAULT_PEERS = 'lb1:appliance,lb2:appliance,ctl:controller,srv1:keeper,srv2:keeper,srv3:keeper,admin:admin';

const USAGE = `usage: vipshift pki init --dir DIR [--peers ID:ROLE,...] [--force]
       vipshift pki etcd --dir DIR --members NAME=HOST[/HOST...],... [--clients NAME,...] [--force]
  roles: ${ROLES.join(', ')} (default peers: ${DEFAULT_PEERS})
  HOST: an IP address or host name the etcd member is reached by
`;

/** 'lb1:appliance,ctl:controller' → { lb1: 'appliance', ctl: 'controller' }; throws naming the bad item. */
export function parsePeers(text: string): Record<string, Role> {
  const members: Record<string, Role> = {};
  for (const item of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [id, role, ...rest] = item.split(':');
    if (!id || rest.length > 0 || !isRole(role)) throw new Error(`--peers: '${item}': expected ID:ROLE with a role of ${ROLES.join(', ')}`);
    if (id in members) throw new Error(`--peers: '${id}' is named twice`);
    members[id] = role;
  }
  return members;
}

/** 'ctl1=192.0.2.2/ctl1.site,ctl2=192.0.2.3' → members; throws naming the bad item. */
export function parseEtcdMembers(text: string): EtcdMemberSpec[] {
  const members: EtcdMemberSpec[] = [];
  for (const item of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=]+)=(.+)$/.exec(item);
    if (!m) throw new Error(`--members: '${item}': expected NAME=HOST[/HOST...]`);
    if (members.some((x) => x.name === m[1])) throw new Error(`--members: '${m[1]}' is named twice`);
    members.push({ name: m[1]!, hosts: m[2]!.split('/').filter(Boolean) });
  }
  if (members.length === 0) throw new Error('--members: expected at least one NAME=HOST');
  return members;
}

async function etcd(rest: string[]): Promise<number> {
  try {
    const { values } = parseArgs({ args: rest, options: { dir: { type: 'string' }, members: { type: 'string' }, clients: { type: 'string' }, force: { type: 'boolean' } } });
    if (!values.dir) throw new Error('--dir is required');
    const members = parseEtcdMembers(values.members ?? '');
    const clients = values.clients ? values.clients.split(',').map((c) => c.trim()).filter(Boolean) : members.map((m) => m.name);
    const written = await createEtcdPki(values.dir, { members, clients }, values.force ?? false);
    process.stdout.write(`etcd TLS for members ${members.map((m) => `${m.name} (${m.hosts.join(', ')})`).join(', ')} and clients ${clients.join(', ')} in ${etcdPkiDir(values.dir)} (${written.length} files written, keys mode 0600)\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`vipshift pki etcd: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
}

export async function pki(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'etcd') return etcd(rest);
  if (sub !== 'init') {
    process.stderr.write(USAGE);
    return 2;
  }
  let values: { dir?: string; peers?: string; force?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, options: { dir: { type: 'string' }, peers: { type: 'string' }, force: { type: 'boolean' } } }));
  } catch (err) {
    process.stderr.write(`vipshift pki: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.dir) {
    process.stderr.write(`vipshift pki: --dir is required\n${USAGE}`);
    return 2;
  }
  let peers: Record<string, Role>;
  try {
    peers = parsePeers(values.peers ?? DEFAULT_PEERS);
  } catch (err) {
    process.stderr.write(`vipshift pki: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const written = createClusterCredentials(values.dir, peers, values.force ?? false);
  // The bearer token a stock Prometheus scrapes every process's metrics listener with.
  written.push(createMetricsToken(values.dir));
  const list = Object.entries(peers).map(([id, role]) => `${id} (${role})`);
  process.stdout.write(`cluster credentials for ${list.join(', ')} in ${values.dir} (${written.length} files, mode 0600)\n`);
  return 0;
}
