/**
 * The controller's configuration and its API's request bodies refuse a field they do not
 * know, naming it (file:line:field, or the API's `field`), instead of dropping it silently.
 */
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ZodType } from 'zod';
import { issueAt } from '../../src/api/issue.js';
import { parseControllerConfig } from '../../src/config/controller.js';
import { ConfigError } from '../../src/config/load.js';
import { controllerApi } from '../../src/controller/api.js';
import { controllerConfig, defaultSite } from '../../src/lab/site.js';

const BASE = `controller: ctl
api: { listen: 192.0.2.2:8440 }
appliances:
  - name: lb1
    api: http://192.0.2.11:8441
keepers:
  - { name: srv1, api: http://192.0.2.21:8442 }
vips:
  - { name: vip1, owner: lb1 }
migration: { stepTimeoutMs: 10000 }
`;

function errorsOf(text: string): string[] {
  try {
    parseControllerConfig(text, 'ctl.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.split('\n');
  }
  throw new Error('expected the configuration to be refused');
}

describe('controller configuration', () => {
  it('is accepted as written', () => {
    expect(parseControllerConfig(BASE, 'ctl.yaml')).toMatchObject({ controller: 'ctl', appliances: [{ name: 'lb1', capacity: 1 }], migration: { stepTimeoutMs: 10000 } });
  });

  it('refuses an unknown field at its line, wherever it is', () => {
    expect(errorsOf(`${BASE}jounral: /var/lib/x.sqlite\n`)).toEqual(['ctl.yaml:11: jounral: unknown field']);
    expect(errorsOf(BASE.replace('    api: http://192.0.2.11:8441\n', '    api: http://192.0.2.11:8441\n    capacty: 2\n'))).toEqual(['ctl.yaml:6: appliances[0].capacty: unknown field']);
    expect(errorsOf(BASE.replace('{ name: srv1,', '{ name: srv1, server: srv1,'))).toEqual(['ctl.yaml:7: keepers[0].server: unknown field']);
    expect(errorsOf(BASE.replace('{ name: vip1, owner: lb1 }', '{ name: vip1, owner: lb1, pinned: true }'))).toEqual(['ctl.yaml:9: vips[0].pinned: unknown field']);
    expect(errorsOf(BASE.replace('{ stepTimeoutMs: 10000 }', '{ stepTimeoutMs: 10000, stepTimeout: 5s }'))).toEqual(['ctl.yaml:10: migration.stepTimeout: unknown field']);
  });

  it("accepts the lab's files, one controller or three on etcd", () => {
    const one = defaultSite({ name: 'vtcfg' });
    expect(parseControllerConfig(stringify(controllerConfig(one)), 'ctl.yaml').controller).toBe('ctl');
    const three = defaultSite({ name: 'vtcfg', controllers: 3 });
    for (const c of three.apis.controllers) expect(parseControllerConfig(stringify(controllerConfig(three, c.host)), `${c.host}.yaml`).store).toMatchObject({ etcd: { leaseSeconds: 3 } });
  });
});

describe("controller API's request bodies", () => {
  const bodies = Object.entries(controllerApi).filter((e): e is [string, (typeof e)[1] & { body: ZodType }] => 'body' in e[1] && e[1].body !== undefined);

  it('exist', () => {
    expect(bodies.map(([name]) => name)).toEqual(expect.arrayContaining(['migrate', 'setRebalance', 'pin', 'maintenance', 'drain', 'backends', 'reload']));
  });

  it.each(bodies)('%s refuses an unknown field, naming it', (_, e) => {
    const r = e.body.safeParse({ colour: 'red' });
    expect(r.success).toBe(false);
    const unknown = r.error!.issues.find((i) => i.code === 'unrecognized_keys');
    expect(unknown && issueAt(unknown)).toEqual({ path: ['colour'], message: 'unknown field' });
  });
});
