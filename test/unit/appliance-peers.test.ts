/**
 * The clients an appliance uses to pull a VIP's entries from another appliance: by the name
 * of a configured peer only, one client per peer. Two names on one URL must not share a
 * client (the first caller's identity would stick, and the second would talk to a member it
 * did not mean).
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/api/auth.js';
import { createApiServer, type ApiServer } from '../../src/api/server.js';
import { peerClients } from '../../src/appliance/agent.js';
import { makeCluster } from './api-helpers.js';

const cluster = makeCluster(['lb1', 'lb2', 'lb3']);
let lb2: ApiServer;

beforeAll(async () => {
  lb2 = createApiServer({
    name: 'agent',
    routes: [{ method: 'GET', path: '/v1/who', handler: (ctx) => ({ caller: ctx.peer }) }],
    roles: { 'GET /v1/who': ['appliance'] },
    authenticator: new Authenticator(cluster.creds('lb2')),
    logger: pino({ level: 'silent' }),
    metrics: new Registry(),
  });
  await lb2.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await lb2.close();
  cluster.remove();
});

describe('peer clients', () => {
  it('are made from the configuration, one per name, and none for a name not configured', async () => {
    const peers = [
      { name: 'lb2', api: lb2.url },
      { name: 'lb3', api: lb2.url }, // a wrong line: lb3's name on lb2's address
    ];
    const clientOf = peerClients(peers, cluster.creds('lb1'));
    expect(clientOf('http://192.0.2.66:8441')).toBeUndefined();
    expect(clientOf('lb9')).toBeUndefined();
    const a = clientOf('lb2')!;
    expect(clientOf('lb2')).toBe(a);
    expect(await a.get('/v1/who')).toEqual({ caller: 'lb1' });
    // The same URL under another name: its own client, which expects lb3 and so refuses lb2's answer.
    const b = clientOf('lb3')!;
    expect(b).not.toBe(a);
    await expect(b.get('/v1/who')).rejects.toThrow(/signed by 'lb2', expected 'lb3'/);
    a.close();
    b.close();
  });
});
