/**
 * Forged requests straight to an appliance's agent, from the management network (the
 * controller's namespace), where an attacker would need to be to steal a VIP: no credentials,
 * a key of another cluster under the controller's name, a genuine request replayed, and the
 * same captured signature on another VIP's path. All refused; vip1 stays on lb1 with its
 * connections.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, credentialsDir } from '../../src/lab/lab.js';
import { withLab } from '../helpers/lab.js';
import { modesOf, siteStatus } from './controller-helpers.js';

const script = (dist: string, credentials: string, agent: string) => `
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const { createClusterCredentials, loadCredentials, signRequest, sha256Hex } = await import(${JSON.stringify(`${dist}/api/auth.js`)});
const agent = ${JSON.stringify(agent)};
const send = async (path, headers, body) => (await fetch(agent + path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body })).status;
const sign = (creds, path, body) => signRequest(creds, { method: 'POST', path, audience: 'lb1', contentSha256: sha256Hex(body) });
const release = JSON.stringify({ action: 'release' });
const other = mkdtempSync(join(tmpdir(), 'forger-'));
createClusterCredentials(join(other, 'pki'), { ctl: 'controller' });
const forged = loadCredentials(join(other, 'pki'), 'ctl');
const ctl = loadCredentials(${JSON.stringify(credentials)}, 'ctl');
const out = {};
out.none = await send('/v1/vips/vip1/address', {}, release);
out.otherCluster = await send('/v1/vips/vip1/address', sign(forged, '/v1/vips/vip1/address', release), release);
out.otherClusterAbort = await send('/v1/vips/vip1/abort', sign(forged, '/v1/vips/vip1/abort', '{}'), '{}');
// A genuine, harmless request (abort of vip3, which lb1 does not own), captured:
const captured = sign(ctl, '/v1/vips/vip3/abort', '{}');
out.genuine = await send('/v1/vips/vip3/abort', captured, '{}');
out.replayed = await send('/v1/vips/vip3/abort', captured, '{}');
out.replayedOnVip1 = await send('/v1/vips/vip1/abort', captured, '{}');
out.expired = await send('/v1/vips/vip1/forget', signRequest(ctl, { method: 'POST', path: '/v1/vips/vip1/forget', audience: 'lb1', contentSha256: sha256Hex('{}') }, Date.now() - 120000), '{}');
process.stdout.write(JSON.stringify(out));
`;

describe('forged requests to an appliance agent in the lab', () => {
  it('are refused and vip1 stays on lb1 with its connections', async () => {
    await withLab({ prefix: 'vtctl' }, async (lab) => {
      const vip1 = lab.info.vips.find((v) => v.name === 'vip1')!;
      const traffic = lab.traffic({ address: vip1.address, port: 7, connections: 20, intervalMs: 50 });
      await traffic.established;
      const agent = lab.info.appliances.find((a) => a.name === 'lb1')!.api;
      const r = await lab.exec('ctl', [process.execPath, '--input-type=module', '-e', script(path.join(REPO_ROOT, 'dist'), credentialsDir(lab.site), agent)]);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({
        none: 401,
        otherCluster: 401,
        otherClusterAbort: 401,
        genuine: 200,
        replayed: 401,
        replayedOnVip1: 401,
        expired: 401,
      });
      const summary = await traffic.stop();
      expect(summary.connections).toMatchObject({ established: 20, ok: 20, failed: 0 });
      const site = await siteStatus(lab);
      expect(site.vips.find((v) => v.name === 'vip1')).toMatchObject({ owner: 'lb1', mode: 'normal' });
      expect(modesOf(site, 'vip1')).toEqual({ lb1: 'normal' });
      expect(site.appliances.find((a) => a.name === 'lb1')?.vips.find((v) => v.name === 'vip1')?.entries).toBeGreaterThanOrEqual(20);
    });
  }, 120_000);
});
