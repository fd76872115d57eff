/**
 * How the operator's commands (status, migrate, ...) reach the controller: `--controller
 * URL` and `--credentials DIR` as given; otherwise the lab's controller when a lab is up
 * (its local socket and credentials in the lab's state directory); otherwise the
 * appliance's own defaults.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_CREDENTIALS_DIR, loadCredentials } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
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

export function controllerClient(t: ControllerTarget): ApiClient {
  const labDir = path.join(DEFAULT_STATE_BASE, t.lab ?? DEFAULT_LAB_NAME);
  const lab = existsSync(path.join(labDir, 'controller.sock'));
  const url = t.controller ?? (lab ? `unix:${path.join(labDir, 'controller.sock')}` : 'unix:/run/vipshift/controller.sock');
  const dir = t.credentials ?? (lab ? path.join(labDir, 'credentials') : DEFAULT_CREDENTIALS_DIR);
  return new ApiClient(url, loadCredentials(dir, t.identity ?? 'admin'), { peer: 'ctl', timeoutMs: 60_000 });
}
