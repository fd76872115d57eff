/** The metrics listener a stock Prometheus scrapes: real HTTP on loopback, a bearer token from the credentials directory. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { createMetricsToken, loadMetricsToken, metricsAddress, startMetricsListener } from '../../src/metrics/listener.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-metrics-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: 'silent' });

describe('metrics listener', () => {
  it('serves the registry to the bearer of the token, and nothing to anyone else', async () => {
    createMetricsToken(dir);
    const token = loadMetricsToken(dir)!;
    const registry = new Registry();
    new Counter({ name: 'vipshift_test_total', help: 'a test counter', registers: [registry] }).inc(3);
    const listener = (await startMetricsListener({ config: { enabled: true, listen: '127.0.0.1:0' }, apiListen: '127.0.0.1:8441', credentialsDir: dir, registry, logger, name: 'test' }))!;
    try {
      const ok = await fetch(listener.url, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await ok.text()).toMatch(/^vipshift_test_total 3$/m);
      for (const authorization of [undefined, `Bearer ${token.slice(1)}x`, `Basic ${token}`, token]) {
        const refused = await fetch(listener.url, authorization ? { headers: { authorization } } : {});
        expect(refused.status).toBe(401);
        expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
        expect(await refused.text()).not.toMatch(/vipshift_test_total/);
      }
      expect((await fetch(listener.url.replace('/metrics', '/v1/status'), { headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
      expect(await registry.getSingleMetricAsString('vipshift_metrics_scrapes_refused_total')).toMatch(/\{listener="test"\} 4$/m);
    } finally {
      await listener.close();
    }
  });

  it('is off without a token (and says so), and refuses a token too short to be one', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'vipshift-metrics-none-'));
    try {
      expect(await startMetricsListener({ config: { enabled: true, listen: '127.0.0.1:0' }, apiListen: '127.0.0.1:8441', credentialsDir: empty, registry: new Registry(), logger, name: 'test' })).toBeUndefined();
      writeFileSync(join(empty, 'metrics.token'), 'short\n');
      expect(() => loadMetricsToken(empty)).toThrow(/at least 32 characters/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('listens by default on the API\'s address, port + 1000, and is on by default', () => {
    const config = parseApplianceConfig('appliance: lb1\napi: { listen: "192.0.2.11:8441" }\ninterfaces: { external: e, internal: i }\nvips: []\n', 'lb1.yaml');
    expect(config.metrics).toEqual({ enabled: true });
    expect(metricsAddress(config.metrics, config.api.listen)).toEqual({ host: '192.0.2.11', port: 9441 });
    expect(metricsAddress({ enabled: true, listen: '127.0.0.1:9100' }, config.api.listen)).toEqual({ host: '127.0.0.1', port: 9100 });
  });
});
