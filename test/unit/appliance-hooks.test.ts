import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { Hooks, hookEnvironment } from '../../src/appliance/hooks.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { notifySchema } from '../../src/config/hooks.js';
import { EventBus } from '../../src/log/events.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-hooks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const quiet = pino({ level: 'silent' });

/** An executable script that appends its arguments and some of its environment to `log`. */
function recorder(name: string, body = ''): { path: string; log: string } {
  const path = join(dir, name);
  const log = join(dir, `${name}.log`);
  writeFileSync(path, `#!/bin/sh\n${body}\nprintf '%s|%s|%s|%s\\n' "$VIPSHIFT_EVENT" "$VIPSHIFT_VIP" "$VIPSHIFT_INSTANCE" "$*" >> ${log}\n`);
  chmodSync(path, 0o755);
  return { path, log };
}

const runs = async (metrics: Registry) => (await metrics.getSingleMetricAsString('vipshift_hook_runs_total')).split('\n').filter((l) => !l.startsWith('#'));

describe('notify hooks', () => {
  it('run the event\'s program with its arguments as given (no shell) and the event in the environment, in order', async () => {
    const master = recorder('master');
    const backup = recorder('backup');
    const metrics = new Registry();
    const hooks = new Hooks(notifySchema.parse({ master: [master.path, '$(touch pwned)', 'two words'], backup: backup.path }), quiet, metrics);
    const bus = new EventBus('lb1');
    hooks.attach(bus);
    bus.emit({ event: 'master', instance: 'VI_1', vip: 'vip1', reason: 'master down' });
    bus.emit({ event: 'backup', instance: 'VI_1', vip: 'vip1', reason: 'higher priority' });
    bus.emit({ event: 'master', instance: 'VI_2', vip: 'vip2' });
    bus.emit({ event: 'takeover', vip: 'vip1' }); // no hook configured: nothing runs
    await hooks.idle();
    expect(readFileSync(master.log, 'utf8')).toBe('master|vip1|VI_1|$(touch pwned) two words\nmaster|vip2|VI_2|$(touch pwned) two words\n');
    expect(readFileSync(backup.log, 'utf8')).toBe('backup|vip1|VI_1|\n');
    expect(() => readFileSync(join(process.cwd(), 'pwned'))).toThrow();
    expect(await runs(metrics)).toEqual(['vipshift_hook_runs_total{event="master",result="ok"} 2', 'vipshift_hook_runs_total{event="backup",result="ok"} 1']);
  });

  it('kill a program at its timeout, count a failure, and go on with the next event', async () => {
    const slow = recorder('slow', 'sleep 30');
    const failing = recorder('failing', 'exit 3');
    const fault = recorder('fault');
    const metrics = new Registry();
    const hooks = new Hooks(notifySchema.parse({ timeoutSeconds: 1, migrationDone: slow.path, migrationAborted: [failing.path], fault: fault.path }), quiet, metrics);
    const t0 = Date.now();
    hooks.enqueue({ event: 'migrationDone', time: '', member: 'lb1', vip: 'vip1' });
    hooks.enqueue({ event: 'migrationAborted', time: '', member: 'lb1', vip: 'vip1' });
    hooks.enqueue({ event: 'fault', time: '', member: 'lb1', instance: 'VI_1' });
    await hooks.idle();
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(() => readFileSync(slow.log)).toThrow(); // killed before it wrote
    expect(readFileSync(fault.log, 'utf8')).toBe('fault||VI_1|\n');
    expect(await runs(metrics)).toEqual([
      'vipshift_hook_runs_total{event="migrationDone",result="timeout"} 1',
      'vipshift_hook_runs_total{event="migrationAborted",result="failed"} 1',
      'vipshift_hook_runs_total{event="fault",result="ok"} 1',
    ]);
  });

  it('count a program that cannot start as failed', async () => {
    const metrics = new Registry();
    const hooks = new Hooks(notifySchema.parse({ takeover: join(dir, 'missing') }), quiet, metrics);
    hooks.enqueue({ event: 'takeover', time: '', member: 'lb1', vip: 'vip1' });
    await hooks.idle();
    expect(await runs(metrics)).toEqual(['vipshift_hook_runs_total{event="takeover",result="failed"} 1']);
  });

  it('name every field of the event in the environment', () => {
    const env = hookEnvironment({ event: 'backendDown', time: 't', member: 'lb1', vip: 'vip4', backend: '198.18.0.102' });
    expect(env).toMatchObject({ VIPSHIFT_EVENT: 'backendDown', VIPSHIFT_MEMBER: 'lb1', VIPSHIFT_VIP: 'vip4', VIPSHIFT_BACKEND: '198.18.0.102' });
    expect(JSON.parse(env.VIPSHIFT_EVENT_JSON!)).toMatchObject({ event: 'backendDown', backend: '198.18.0.102' });
  });

  it('refuse a relative program with file, line and field', () => {
    const text = `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips: []
notify:
  master: on-master.sh
`;
    expect(() => parseApplianceConfig(text, 'lb1.yaml')).toThrow(/lb1\.yaml:6: notify\.master: expected .*absolute path/);
  });
});

describe('event bus', () => {
  it('remembers the last events for a late reader and stamps them', () => {
    const bus = new EventBus('lb1', 2, () => 0);
    for (const vip of ['a', 'b', 'c']) bus.emit({ event: 'takeover', vip });
    expect(bus.recent()).toEqual([
      { event: 'takeover', vip: 'b', time: '1970-01-01T00:00:00.000Z', member: 'lb1' },
      { event: 'takeover', vip: 'c', time: '1970-01-01T00:00:00.000Z', member: 'lb1' },
    ]);
  });
});
