/**
 * How the operator's commands (status, migrate, ...) reach the controllers: `--controller
 * URL[,URL...]` and `--credentials DIR` as given; otherwise the lab's controllers when a lab is
 * up (their local sockets and the credentials in the lab's state directory); otherwise the
 * appliance's own defaults. With several controllers the client follows the leader.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_CREDENTIALS_DIR, PEERS_FILE, keyFile, loadCredentials, type Credentials } from '../api/auth.js';
import { LeaderClient, type ControllerEndpoint } from '../controller/leader-client.js';
import { DEFAULT_LAB_NAME, DEFAULT_STATE_BASE } from '../lab/site.js';

export const CONTROLLER_OPTIONS = {
  controller: { type: 'string' },
  credentials: { type: 'string' },
  identity: { type: 'string' },
  lab: { type: 'string' },
} as const;

export interface ControllerTarget {
  controller?: string;
  credentials?: string;
  identity?: string;
  lab?: string;
}

/**
 * The operator's credentials in `dir`: `identity` if given; else `admin` (the operator's
 * machine, the lab); else the one key there of a member whose role is admin (an appliance
 * holds its own admin identity, `lb1-admin`, never the operator's key).
 */
export function operatorCredentials(dir: string, identity?: string): Credentials {
  if (identity !== undefined) return loadCredentials(dir, identity);
  if (existsSync(path.join(dir, keyFile('admin')))) return loadCredentials(dir, 'admin');
  let held: string[] = [];
  try {
    held = readdirSync(dir).filter((f) => f.endsWith('.key')).map((f) => f.slice(0, -'.key'.length));
  } catch (err) {
    throw new Error(`${dir}: ${(err as Error).message}`);
  }
  const admins: Credentials[] = [];
  for (const id of held) {
    const c = loadCredentials(dir, id);
    if (c.roles.get(id) === 'admin') admins.push(c);
  }
  if (admins.length === 1) return admins[0]!;
  throw new Error(`${dir}: ${admins.length === 0 ? 'holds no key of an admin member' : `holds several admin keys (${admins.map((c) => c.identity).join(', ')})`} (roles in ${PEERS_FILE}): give --identity`);
}

/** The lab's controller sockets: `controller.sock` (one controller) or `controller-NAME.sock` each. */
function labEndpoints(labDir: string): ControllerEndpoint[] {
  if (existsSync(path.join(labDir, 'controller.sock'))) return [{ name: 'ctl', url: `unix:${path.join(labDir, 'controller.sock')}` }];
  let files: string[] = [];
  try {
    files = readdirSync(labDir);
  } catch {
    return [];
  }
  return files
    .map((f) => /^controller-(.+)\.sock$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ name: m[1]!, url: `unix:${path.join(labDir, m[0])}` }));
}

export function controllerClient(t: ControllerTarget): LeaderClient {
  const labDir = path.join(DEFAULT_STATE_BASE, t.lab ?? DEFAULT_LAB_NAME);
  const lab = t.controller ? [] : labEndpoints(labDir);
  const endpoints: ControllerEndpoint[] = t.controller
    ? t.controller.split(',').map((url) => ({ url }))
    : lab.length > 0
      ? lab
      : [{ name: 'ctl', url: 'unix:/run/vipshift/controller.sock' }];
  const dir = t.credentials ?? (lab.length > 0 ? path.join(labDir, 'credentials') : DEFAULT_CREDENTIALS_DIR);
  return new LeaderClient(endpoints, operatorCredentials(dir, t.identity), { timeoutMs: 60_000 });
}
