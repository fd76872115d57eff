import { describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/appliance/agent-api.js';
import { backendChanges } from '../../src/controller/backends.js';

const check = (state: 'up' | 'down', transitions: number, reason: string) => ({
  type: 'tcp' as const,
  checkPort: 7,
  inter: 2000,
  state,
  reason,
  passesInRow: 0,
  failuresInRow: 0,
  checks: { pass: 0, fail: 0, timeout: 0 },
  transitions,
  since: 0,
  applied: true,
});

function status(...backends: { address: string; port?: number; check?: ReturnType<typeof check> }[]): AgentStatus {
  const counters = { entries: 0, packets: 0, bytes: 0, newConnections: 0, rejected: 0, synproxied: 0, limitedVip: 0, limitedSource: 0, unavailable: 0, held: 0, released: 0, overflowed: 0, dropped: 0 };
  return {
    appliance: 'lb1',
    vrrp: [],
    vips: [{ name: 'vip4', address: '203.0.113.13', mode: 'normal', ...counters, backends: backends.map((b) => ({ weight: 1, state: b.check?.state ?? 'up', reason: '', connections: 0, ...b })) }],
  };
}

describe('backend changes seen by the controller', () => {
  it('announces a backend whose check changed state, with the reason', () => {
    const before = status({ address: '198.18.0.101', check: check('up', 0, 'connect ok') }, { address: '198.18.0.102', port: 8080, check: check('up', 0, 'connect ok') });
    const after = status({ address: '198.18.0.101', check: check('up', 0, 'connect ok') }, { address: '198.18.0.102', port: 8080, check: check('down', 1, '3 failed checks: connect refused') });
    expect(backendChanges('lb1', undefined, after)).toEqual([]);
    expect(backendChanges('lb1', before, before)).toEqual([]);
    expect(backendChanges('lb1', before, after)).toEqual([
      { appliance: 'lb1', vip: 'vip4', backend: '198.18.0.102:8080', from: 'up', to: 'down', transitions: 1, reason: '3 failed checks: connect refused' },
    ]);
  });

  it('sees a backend that went down and came back between two polls, and an appliance that restarted', () => {
    const before = status({ address: '198.18.0.101', check: check('up', 2, 'connect ok') });
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('up', 4, '2 passed checks: connect ok') }))).toMatchObject([{ from: 'up', to: 'up', transitions: 2 }]);
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('up', 0, 'not checked yet') }))).toEqual([]);
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('down', 1, '3 failed checks: no answer in 1000 ms') }))).toMatchObject([{ to: 'down', transitions: 1 }]);
    // Not checked (check: enabled false): nothing to say.
    expect(backendChanges('lb1', status({ address: '198.18.0.103' }), status({ address: '198.18.0.103' }))).toEqual([]);
  });
});
