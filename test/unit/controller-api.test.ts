/** The controller's API declared once: the operator's tools get answers parsed by its schemas, never cast. */
import { describe, expect, it } from 'vitest';
import { call, type JsonApi } from '../../src/api/contract.js';
import { CONTROLLER_ROLES, controllerApi } from '../../src/controller/api.js';

/** A client that answers every request with `answer` and records what was asked. */
function fake(answer: unknown): JsonApi & { asked: string[] } {
  const asked: string[] = [];
  const reply = async (path: string, body?: unknown) => {
    asked.push(body === undefined ? path : `${path} ${JSON.stringify(body)}`);
    return answer as never;
  };
  return { asked, get: (p) => reply(p), post: (p, b) => reply(p, b), put: (p, b) => reply(p, b), delete: (p, b) => reply(p, b) };
}

describe('controller API contract', () => {
  it('fills paths and queries from the declaration and parses the answer', async () => {
    const api = fake({ appliances: [{ appliance: 'lb1', ok: true, result: { vip: 'vip1', backends: [{ address: '198.18.0.101', weight: 0, state: 'drained', extra: 1 }] } }], keepers: [] });
    const r = await call(api, controllerApi.backends, { params: { name: 'vip 1' }, body: { action: 'drain', address: '198.18.0.101' } });
    expect(api.asked).toEqual(['/v1/vips/vip%201/backends {"action":"drain","address":"198.18.0.101"}']);
    expect(r.appliances[0]?.result?.backends[0]).toEqual({ address: '198.18.0.101', weight: 0, state: 'drained' });
    const page = fake({ vip: 'vip1', total: 0, matched: 0, offset: 0, limit: 5, sort: '-timeout', filter: '', rows: [], snapshotAt: 'now', snapshotAgeMs: 0, dumpMs: 1 });
    await call(page, controllerApi.entriesPage, { params: { name: 'lb1', vip: 'vip1' }, query: { offset: 0, limit: 5, sort: '-timeout' } });
    expect(page.asked).toEqual(['/v1/appliances/lb1/vips/vip1/entries?offset=0&limit=5&sort=-timeout']);
  });

  it('refuses an answer that is not what the route declares, naming the field', async () => {
    await expect(call(fake({ vips: [], appliances: [], migrations: [], rebalance: 'sometimes' }), controllerApi.status)).rejects.toThrow(
      /GET \/v1\/status: unexpected answer at 'rebalance'/,
    );
    await expect(call(fake({ remaining: 'lb1' }), controllerApi.drain, { params: { name: 'lb1' }, body: {} })).rejects.toThrow(/unexpected answer/);
  });

  it('has one role list per declared route, the operator levers admin only', () => {
    expect(CONTROLLER_ROLES['POST /v1/migrations']).toEqual(['admin']);
    expect(CONTROLLER_ROLES['GET /v1/status']).toEqual(['admin', 'monitor']);
    expect(Object.keys(CONTROLLER_ROLES)).toHaveLength(Object.keys(controllerApi).length);
  });
});
