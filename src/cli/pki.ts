/**
 * `vipshift pki init --dir DIR [--peers lb1,lb2,ctl,...] [--force]`: creates the cluster's
 * credentials — an Ed25519 key pair per member and the trust list (src/api/auth.ts). Give each
 * box its own `<identity>.key` and the common `peers.json`.
 */
import { parseArgs } from 'node:util';
import { createClusterCredentials } from '../api/auth.js';

/** The lab's members (CONTRACT: lb1, lb2, the controller, three servers) and the operator's CLI. */
export const DEFAULT_PEERS = ['lb1', 'lb2', 'ctl', 'srv1', 'srv2', 'srv3', 'admin'];

const USAGE = 'usage: vipshift pki init --dir DIR [--peers lb1,lb2,ctl,...] [--force]\n';

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
  const peers = values.peers ? values.peers.split(',').map((p) => p.trim()).filter(Boolean) : DEFAULT_PEERS;
  const written = createClusterCredentials(values.dir, peers, values.force ?? false);
  process.stdout.write(`cluster credentials for ${peers.join(', ')} in ${values.dir} (${written.length} files, mode 0600)\n`);
  return 0;
}
