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
