/**
 * A model of a site's appliances for the controller's unit tests: each VIP's address, each
 * appliance's mode table and access-table entries, the packets it holds. Its agents implement
 * the same operations as the real agent (src/appliance/appliance.ts), idempotent like them, and an
 * appliance can be made unreachable.
 */
import type { ApplianceAgent } from '../../src/controller/controller.js';
import type { HoldRelease, ImportOptions, ImportResult, MigrationAgent, PrecopyResult } from '../../src/migration/migration.js';
import type { ApplianceStatus } from '../../src/appliance/appliance.js';

export class ModelSite {
  /** VIP → appliances holding its address (more than one is a split brain). */
  readonly addresses = new Map<string, Set<string>>();
  readonly modes = new Map<string, Map<string, 'normal' | 'migrating'>>();
  /** appliance → VIP → entries (connections). */
  readonly entries = new Map<string, Map<string, number>>();
  readonly held = new Map<string, Map<string, number>>();
  /** Packets a VIP's clients sent to an appliance that neither forwarded nor held them: would be resets. */
  resets = 0;
  readonly counters = new Map<string, Map<string, { packets: number; bytes: number; newConnections: number }>>();
  readonly down = new Set<string>();
  /** appliance → VIPs whose mirror keeps a change journal for a pre-copy. */
  readonly tracking = new Map<string, Set<string>>();

  constructor(
    readonly appliances: string[],
    vips: { name: string; owner: string; connections: number }[],
  ) {
    for (const a of appliances) {
      this.modes.set(a, new Map());
      this.entries.set(a, new Map());
      this.held.set(a, new Map());
      this.counters.set(a, new Map());
      this.tracking.set(a, new Set());
    }
    for (const v of vips) {
      this.addresses.set(v.name, new Set([v.owner]));
      this.modes.get(v.owner)!.set(v.name, 'normal');
      this.entries.get(v.owner)!.set(v.name, v.connections);
    }
  }

  agent(name: string): ModelAgent {
    return new ModelAgent(name, this);
  }

  /** Who forwards the VIP: address and `normal` mode on the same appliance. */
  owners(vip: string): string[] {
    return this.appliances.filter((a) => this.addresses.get(vip)?.has(a) && this.modes.get(a)!.get(vip) === 'normal');
  }

  /** Traffic to a VIP reaches every appliance that has its address. */
  send(vip: string, packets: number): void {
    for (const a of this.addresses.get(vip) ?? []) {
      const mode = this.modes.get(a)!.get(vip);
      if (mode === 'migrating') this.held.get(a)!.set(vip, (this.held.get(a)!.get(vip) ?? 0) + packets);
      else if (mode === 'normal' && (this.entries.get(a)!.get(vip) ?? 0) > 0) {
        const c = this.counters.get(a)!.get(vip) ?? { packets: 0, bytes: 0, newConnections: 0 };
        this.counters.get(a)!.set(vip, { ...c, packets: c.packets + packets, bytes: c.bytes + 100 * packets });
      } else this.resets += packets;
    }
  }
}

export class ModelAgent implements ApplianceAgent {
  readonly url: string;
  /** Operations this agent carried out, in order. */
  readonly calls: string[] = [];

  constructor(
    readonly name: string,
    private readonly site: ModelSite,
  ) {
    this.url = `http://${name}.model`;
  }

  private check(op: string, vip: string): void {
    if (this.site.down.has(this.name)) throw new Error(`${this.name} does not answer`);
    this.calls.push(`${op} ${vip}`);
  }
  private get modes() {
    return this.site.modes.get(this.name)!;
  }
  private get entries() {
    return this.site.entries.get(this.name)!;
  }

  async status(): Promise<ApplianceStatus> {
    this.check('status', '*');
    const vips = [...this.site.addresses.keys()].map((vip) => {
      const c = this.site.counters.get(this.name)!.get(vip) ?? { packets: 0, bytes: 0, newConnections: 0 };
      return {
        name: vip,
        address: `model:${vip}`,
        mode: this.modes.get(vip) ?? ('absent' as const),
        entries: this.entries.get(vip) ?? 0,
        ...c,
        unavailable: 0,
        backends: [],
        rejected: 0,
        synproxied: 0,
        limitedVip: 0,
        limitedSource: 0,
        held: this.site.held.get(this.name)!.get(vip) ?? 0,
        released: 0,
        overflowed: 0,
        dropped: 0,
      };
    });
    return { appliance: this.name, vips, vrrp: [] };
  }
  // Backends are not modelled: the controller's fan-out is tested against real agents.
  changeBackend(): Promise<never> {
    return Promise.reject(new Error('backends are not modelled'));
  }
  reload(): Promise<never> {
    return Promise.reject(new Error('reload is not modelled'));
  }
  async prepare(vip: string): Promise<void> {
    this.check('prepare', vip);
    this.modes.set(vip, 'migrating');
  }
  async releaseAddress(vip: string): Promise<void> {
    this.check('release', vip);
    this.site.addresses.get(vip)!.delete(this.name);
  }
  async claimAddress(vip: string): Promise<void> {
    this.check('claim', vip);
    this.site.addresses.get(vip)!.add(this.name);
  }
  /** Held first (no packet meets the copies), then the source's entries, its change journal started. */
  async precopy(vip: string, source: MigrationAgent, _migration: string, onProgress: (moved: number) => void): Promise<PrecopyResult> {
    this.check('precopy', vip);
    if (this.site.down.has(source.name)) throw new Error(`${source.name} does not answer`);
    if (!this.modes.has(vip)) this.modes.set(vip, 'migrating');
    this.site.tracking.get(source.name)!.add(vip);
    const n = this.site.entries.get(source.name)!.get(vip) ?? 0;
    this.entries.set(vip, n);
    onProgress(n);
    return { created: n, failed: 0, rounds: [] };
  }
  async endTracking(vip: string): Promise<void> {
    this.check('end-tracking', vip);
    this.site.tracking.get(this.name)!.delete(vip);
  }
  async importEntries(vip: string, source: MigrationAgent, onProgress: (moved: number) => void, options: ImportOptions = {}): Promise<ImportResult> {
    await this.claimAddress(vip); // the end of step 2 goes with step 3's request
    this.check(options.precopied ? 'import-difference' : 'import', vip);
    if (this.site.down.has(source.name)) throw new Error(`${source.name} does not answer`);
    const n = this.site.entries.get(source.name)!.get(vip) ?? 0;
    this.entries.set(vip, n);
    onProgress(n);
    return { created: n, failed: 0 };
  }
  async deleteEntries(vip: string): Promise<void> {
    this.check('delete-entries', vip);
    this.entries.delete(vip);
    this.site.tracking.get(this.name)!.delete(vip);
  }
  async forget(vip: string): Promise<void> {
    this.check('forget', vip);
    this.modes.delete(vip);
  }
  async activate(vip: string): Promise<HoldRelease> {
    this.check('activate', vip);
    this.modes.set(vip, 'normal');
    const released = this.site.held.get(this.name)!.get(vip) ?? 0;
    this.site.held.get(this.name)!.delete(vip);
    return { released };
  }
  async abort(vip: string): Promise<void> {
    this.check('abort', vip);
    this.modes.delete(vip);
    this.entries.delete(vip);
    // Held packets are dropped: the clients retransmit them (to whoever has the address then).
    this.site.held.get(this.name)!.delete(vip);
  }
}
