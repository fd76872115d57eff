/**
 * An appliance without a kernel for the takeover's and the failover's unit tests: it keeps the
 * mode each call leaves a VIP in and logs the calls in order, so a test reads what a takeover
 * did to the appliance and in which order.
 */
import type { FailoverAppliance } from '../../src/appliance/failover.js';
import type { ApplianceConfig } from '../../src/config/appliance.js';
import type { VipMode } from '../../src/nat/ruleset.js';
import { RECORD_SIZE } from '../../src/netlink/entry-record.js';

export interface FakeApplianceAnswers {
  /** Held packets an activation releases. */
  released?: number;
  /** Of each install, how many entries were there already (a retried step). */
  existing?: number;
}

export class FakeAppliance implements FailoverAppliance {
  readonly modes = new Map<string, VipMode>();
  readonly log: string[] = [];

  constructor(
    public config: ApplianceConfig,
    private readonly answers: FakeApplianceAnswers = {},
  ) {}

  vip(name: string) {
    const vip = this.config.vips.find((v) => v.name === name);
    if (!vip) throw new Error(`no VIP ${name}`);
    return vip;
  }

  async prepare(name: string) {
    this.log.push(`prepare ${name}`);
    this.modes.set(name, 'migrating');
  }

  async claimAddress(name: string) {
    this.log.push(`claim ${name}`);
  }

  async activate(name: string) {
    this.log.push(`activate ${name}`);
    this.modes.set(name, 'normal');
    return { released: this.answers.released ?? 0 };
  }

  async deleteEntries(name: string) {
    this.log.push(`delete ${name}`);
  }

  async installEntries(vip: string, records: Buffer, from: { kind: 'keeper' | 'peer'; source: string }) {
    const count = records.length / RECORD_SIZE;
    const existing = Math.min(count, this.answers.existing ?? 0);
    this.log.push(`install ${vip} ${count} from ${from.kind} ${from.source}`);
    return { created: count - existing, existing, failures: [], refused: 0 };
  }

  async dropPrecopy(name: string) {
    this.log.push(`drop precopy ${name}`);
  }
}

/**
 * lb2 of a site with vip1 (owned by lb1) and vip2 (owned by lb2), each on its own server with
 * a keeper: the appliance whose takeovers the unit tests follow. `tail` adds sections (vrrp).
 */
export const lb2ConfigText = (failover: string, tail = '') => `appliance: lb2
api: { listen: "192.0.2.12:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
  - { name: vip2, id: 2, address: 203.0.113.11, insideAddress: 198.18.0.11, ports: [7], mode: dnat, backends: [{ address: 198.18.0.102 }], owner: lb2 }
keepers:
  - { name: srv1, server: 198.18.0.101, api: "http://192.0.2.21:8442" }
  - { name: srv2, server: 198.18.0.102, api: "http://192.0.2.22:8442" }
failover: ${failover}
${tail}`;
