/**
 * `vipshift pki init --dir DIR [--peers lb1:appliance,ctl:controller,...] [--force]`: creates the
 * cluster's credentials — an Ed25519 key pair per member and the trust list with every
 * member's role (src/api/auth.ts, docs/api.md). Give each box its own `<identity>.key` and the
 * common `peers.json`; the operator's key (role admin) stays on the operator's machine.
 */
import { parseArgs } from 'node:util';
import { ROLES, createClusterCredentials, isRole, type Role } from '../api/auth.js';
import { createMetricsToken } from '../metrics/listener.js';

/** The lab's members (lb1, lb2, the controller, three servers) and the operator's CLI. */
export const DEFAULT_PEERS = 'lb1:appliance,lb2:appliance,ctl:controller,srv1:keeper,srv2:keeper,srv3:keeper,admin:admin';

const USAGE = `usage: vipshift pki init --dir DIR [--peers ID:ROLE,...] [--force]
  roles: ${ROLES.join(', ')} (default peers: ${DEFAULT_PEERS})
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

export async function pki(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
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
