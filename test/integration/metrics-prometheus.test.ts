/**
 * A stock Prometheus (Debian's) scrapes the default lab: every process's metrics listener with
 * the cluster's bearer token, the scrape configuration the lab writes (docs/metrics.md). It
 * runs in the controller's namespace; the test asks it, over its HTTP API, whether every
 * target is up and for a VIP's series while traffic runs through the VIP.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { labDown, labUp, siteFor } from '../../src/lab/lab.js';
import { run } from '../../src/lab/netns.js';
import { host, prometheusConfig, type Site } from '../../src/lab/site.js';
import { startTraffic } from '../../src/lab/traffic.js';
import { uniqueLabName } from '../helpers/lab.js';

const name = uniqueLabName('vtprom');
let site: Site;
let dir: string;
let prometheus: ChildProcess | undefined;
const vipAddress: Record<string, string> = {};

/** A PromQL query through Prometheus's HTTP API, from inside the controller's namespace. */
async function query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const r = await run('ip', ['netns', 'exec', host(site, 'ctl').namespace, 'curl', '-sf', '--get', '--data-urlencode', `query=${promql}`, 'http://127.0.0.1:9090/api/v1/query']);
  if (r.code !== 0) return [];
  return (JSON.parse(r.stdout) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } }).data.result;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

beforeAll(async () => {
  site = siteFor(name);
  const up = await labUp({ name, owned: true });
  for (const v of up.status.vips) vipAddress[v.name] = v.address;
  dir = mkdtempSync(join(tmpdir(), 'vipshift-prometheus-'));
  writeFileSync(join(dir, 'prometheus.yml'), YAML.stringify(prometheusConfig(site, '1s')));
  const check = await run('promtool', ['check', 'config', join(dir, 'prometheus.yml')]);
  expect(check.code, check.stdout + check.stderr).toBe(0);
  prometheus = spawn('ip', ['netns', 'exec', host(site, 'ctl').namespace, 'prometheus', `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, '--web.listen-address=127.0.0.1:9090'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  prometheus.stderr!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-4000)));
  prometheus.once('exit', (code) => code && process.stderr.write(`prometheus exited ${code}: ${log}\n`));
}, 120_000);

afterAll(async () => {
  if (prometheus?.pid) {
    prometheus.kill('SIGTERM');
    await new Promise((r) => prometheus!.once('exit', r));
  }
  await labDown({ name });
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('a stock Prometheus scrapes the lab', () => {
  it('finds every process up and reads a VIP\'s series', async () => {
    const targets = (prometheusConfig(site).scrape_configs as { static_configs: { targets: string[] }[] }[]).flatMap((j) => j.static_configs[0]!.targets);
    const up = await until(
      'every target up',
      async () => {
        const r = await query('up');
        return r.length === targets.length && r.every((s) => s.value[1] === '1') ? r : undefined;
      },
      30_000,
    );
    expect(up.map((s) => s.metric.job).sort()).toEqual(['vipshift-appliance', 'vipshift-appliance', 'vipshift-controller', 'vipshift-keeper', 'vipshift-keeper', 'vipshift-keeper']);

    const traffic = startTraffic(`${name}-client`, { address: vipAddress.vip1!, port: 7, connections: 20, intervalMs: 20, timeoutMs: 5000 });
    await traffic.established;
    try {
      const series = await until(
        'vip1 packets and entries scraped',
        async () => {
          const packets = await query('vipshift_vip_packets_total{vip="vip1"} > 0');
          const entries = await query('vipshift_vip_entries{vip="vip1"} >= 20');
          return packets.length > 0 && entries.length > 0 ? { packets, entries } : undefined;
        },
        30_000,
      );
      expect(series.entries[0]!.metric).toMatchObject({ job: 'vipshift-appliance', appliance: 'lb1', vip: 'vip1' });
    } finally {
      await traffic.stop();
    }
  }, 90_000);
});
