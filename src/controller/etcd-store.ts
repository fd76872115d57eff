/**
 * The controller on etcd (the one module that owns the etcd3 client): the store of store.ts
 * in etcd's keys, and the election of one leader among two or three controllers.
 *
 * Election: every controller keeps a lease of `leaseSeconds` alive (a keep-alive every sixth
 * of it, a failed one retried at once) and tries, eight times a lease while it follows, to
 * create the leader key under that lease. The one that creates it leads; its epoch is the key's create revision (etcd's
 * revisions only grow, so a later leader's epoch is larger). A leader counts its lease from the
 * moment it *sent* the last keep-alive etcd answered, and stops leading half a second before
 * etcd could let it expire: cut off from etcd, it has stopped acting before anyone else
 * can be elected.
 *
 * Fencing: every write of the leader is a transaction that compares the leader key's create
 * revision with its epoch; a deposed leader's write changes nothing and fails.
 *
 * Keys under the prefix: `schema`, `leader`, `controllers/<name>` (each controller's lease),
 * `appliances/<name>`, `vips/<name>`, `settings/<key>`, `migrations/<id>`, `running/<vip>`
 * (one migration per VIP), `events/<id>/<n>`. Statistics (poll health, measured traffic) stay
 * in the leader's memory: a new leader relearns them in a few polls.
 *
 * History: etcd keeps every revision of every key until it is compacted, and the journal
 * gains a migration and its events with each move. The leader prunes (prune()): ended
 * migrations beyond the newest `keepMigrations` are deleted with their events, and etcd's
 * history is compacted to `keepRevisions` behind the current revision, so that the store does
 * not grow without bound.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions, type Lease, type Namespace } from 'etcd3';
import type { Logger } from 'pino';
import { PHASES, type MigrationProgress, type Phase } from '../migration/migration.js';
import { NotLeaderError, type ControllerIdentity, type Leadership } from './leadership.js';
import type { ControllerStore, InventoryAppliance, InventoryVip, JournalEvent, JournalMigration, MigrationReason, VipTraffic } from './store.js';

/** Schema changes of the etcd store, in order (the `schema` key counts those applied). */
const SCHEMA_VERSION = 1;
/** etcd refuses transactions of more than 128 operations by default. */
const TXN_OPS = 100;
const LEADER = 'leader';

export interface EtcdSettings {
  endpoints: string[];
  /** Every key of this site starts with it. */
  prefix: string;
  leaseSeconds: number;
  /** Client certificate authentication and a private CA (PEM files). */
  tls?: { ca: string; cert: string; key: string } | undefined;
  /** What prune() keeps: the newest ended migrations (with their events), and etcd's revisions behind the current one. */
  history?: { keepMigrations: number; keepRevisions: number } | undefined;
}

/** What the journal keeps unless the configuration says otherwise (store.etcd.history). */
export const HISTORY_DEFAULTS = { keepMigrations: 1000, keepRevisions: 10_000 } as const;

const withTimeout = <T>(what: string, ms: number, work: Promise<T>): Promise<T> =>
  Promise.race([work, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`etcd: ${what} took more than ${ms} ms`)), ms).unref())]);

export interface EtcdMemberHealth {
  endpoint: string;
  healthy: boolean;
  /** This member is etcd's raft leader. */
  leader?: boolean;
  version?: string;
  error?: string;
}

/** The etcd cluster as this controller reaches it. */
export class EtcdCluster {
  readonly client: Etcd3;
  readonly ns: Namespace;
  private readonly options: IOptions;
  /** One client per member for the keep-alives, which the client's pool does not retry elsewhere. */
  private readonly members: Etcd3[];
  private preferred = 0;

  constructor(readonly settings: EtcdSettings) {
    this.options = {
      hosts: settings.endpoints,
      dialTimeout: 1000,
      // Unary calls give up quickly: a controller cut off from etcd must notice, not wait.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + 1500 }),
      ...(settings.tls
        ? { credentials: { rootCertificate: readFileSync(settings.tls.ca), certChain: readFileSync(settings.tls.cert), privateKey: readFileSync(settings.tls.key) } }
        : {}),
    };
    this.client = new Etcd3(this.options);
    this.ns = this.client.namespace(settings.prefix);
    this.members = settings.endpoints.map((endpoint) => new Etcd3({ ...this.options, hosts: [endpoint] }));
    // Connected now, so that the first keep-alives do not pay for it.
    for (const m of this.members) void m.maintenance.status().catch(() => {});
  }

  /**
   * Renews a lease through the member that answered last, else the next ones, each given
   * `timeoutMs`; resolves to the TTL etcd grants from now (0: the lease is gone).
   */
  async keepalive(lease: string, timeoutMs: number): Promise<number> {
    const n = this.members.length;
    let last: unknown;
    for (let i = 0; i < n; i++) {
      const at = (this.preferred + i) % n;
      try {
        const attempt = async () => {
          const stream = await this.members[at]!.leaseClient.leaseKeepAlive();
          try {
            return await new Promise<{ TTL: string }>((resolve, reject) => {
              stream.on('data', resolve);
              stream.on('error', reject);
              stream.write({ ID: lease });
            });
          } finally {
            stream.end();
          }
        };
        const answer = await withTimeout('keep-alive', timeoutMs, attempt());
        this.preferred = at;
        return Number(answer.TTL);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  }

  /**
   * Each endpoint asked on its own, so that one member down shows as such; through the
   * member's own long-lived client (a new client per question cost a TLS handshake per member
   * each time an operator or a console asked).
   */
  async health(): Promise<EtcdMemberHealth[]> {
    return Promise.all(
      this.settings.endpoints.map(async (endpoint, i) => {
        try {
          const s = await withTimeout('status', 1000, this.members[i]!.maintenance.status());
          return { endpoint, healthy: true, leader: s.leader === s.header.member_id, version: s.version };
        } catch (err) {
          return { endpoint, healthy: false, error: (err as Error).message };
        }
      }),
    );
  }

  close(): void {
    this.client.close();
    for (const m of this.members) m.close();
  }
}

/** The election on the leader key (see the top of this file). */
export class EtcdLeadership implements Leadership {
  private lease: Lease | undefined;
  private leaseId = '';
  /** When the last keep-alive etcd answered was sent (ms, the injected clock). */
  private aliveSince = 0;
  private ownEpoch: number | undefined;
  private lastTerm: number | undefined;
  private seen: { identity: ControllerIdentity; epoch: number } | undefined;
  private timers: NodeJS.Timeout[] = [];
  private listeners: ((leading: boolean) => void)[] = [];
  private busy = false;
  private stopped = false;
  elections = 0;

  constructor(
    private readonly cluster: EtcdCluster,
    private readonly self: ControllerIdentity,
    private readonly logger: Logger,
    private readonly now: () => number = () => performance.now(),
  ) {}

  private get ttlMs(): number {
    return this.cluster.settings.leaseSeconds * 1000;
  }

  /** How long after the last renewal this controller still counts on its lease: half a second short of it. */
  private get validMs(): number {
    return this.ttlMs - Math.min(500, this.ttlMs / 3);
  }

  leading(): boolean {
    return this.ownEpoch !== undefined && this.now() < this.aliveSince + this.validMs;
  }

  epoch(): number | undefined {
    return this.leading() ? this.ownEpoch : undefined;
  }

  /** When the last keep-alive etcd answered was sent: the lease lasts at least leaseSeconds from then. */
  renewedAt(): number {
    return this.aliveSince;
  }

  /** The epoch of this controller's latest term, also after it ended (what its requests carry). */
  termEpoch(): number | undefined {
    return this.lastTerm;
  }

  leader(): ControllerIdentity | undefined {
    if (this.leading()) return this.self;
    // Our own term has lapsed: nobody is known to lead until the next round says who does.
    return this.seen?.identity.name === this.self.name ? undefined : this.seen?.identity;
  }

  onChange(listener: (leading: boolean) => void): void {
    this.listeners.push(listener);
  }

  /** Every controller of the site that holds a lease now. */
  async controllers(): Promise<ControllerIdentity[]> {
    const all = await this.cluster.ns.getAll().prefix('controllers/').strings();
    return Object.values(all).map((v) => JSON.parse(v) as ControllerIdentity);
  }

  start(): void {
    const every = (ms: number, work: () => Promise<void>) => {
      const t = setInterval(() => {
        if (this.busy || this.stopped) return;
        this.busy = true;
        work()
          .catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'etcd'))
          .finally(() => (this.busy = false));
      }, ms);
      this.timers.push(t);
    };
    every(Math.max(50, Math.floor(this.ttlMs / 24)), () => this.round());
    // The lapse of our own lease is noticed on its own clock, whatever a round waits for.
    this.timers.push(setInterval(() => this.ownEpoch !== undefined && !this.leading() && this.stepDown('the lease was not renewed in time (etcd unreachable?)'), 50));
    void this.round().catch(() => {});
  }

  /** Stops leading and following; the lease is given back so that another leads at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    const was = this.ownEpoch !== undefined;
    this.ownEpoch = undefined;
    if (was) this.emit(false);
    await withTimeout('revoke', 1000, this.lease?.revoke() ?? Promise.resolve()).catch(() => {});
  }

  private emit(leading: boolean): void {
    for (const l of this.listeners) l(leading);
  }

  private stepDown(why: string): void {
    if (this.ownEpoch === undefined) return;
    this.logger.warn({ epoch: this.ownEpoch, why }, 'no longer the leader');
    this.ownEpoch = undefined;
    this.seen = undefined;
    this.emit(false);
    // Given back (if etcd is reachable) so that the next leader need not wait for it to expire.
    const lease = this.lease;
    this.lease = undefined;
    void withTimeout('revoke', 1000, lease?.revoke() ?? Promise.resolve()).catch(() => {});
  }

  private lastKeepalive = 0;

  /** One round: keep the lease alive when due, notice a lapse, campaign while following. */
  private async round(): Promise<void> {
    if (this.ownEpoch !== undefined && !this.leading()) this.stepDown('the lease was not renewed in time (etcd unreachable?)');
    if (!this.lease) {
      const lease = this.cluster.ns.lease(this.cluster.settings.leaseSeconds, { autoKeepAlive: false });
      const sent = this.now();
      const leaseId = await withTimeout('lease grant', this.ttlMs, lease.grant());
      // Bounded like the grant: a request to a cluster still electing its own leader can hang,
      // and a round that never ends stops every later one (they wait for it).
      await withTimeout('controller registration', this.ttlMs, lease.put(`controllers/${this.self.name}`).value(JSON.stringify(this.self)).exec());
      this.leaseId = leaseId;
      this.lease = lease;
      this.aliveSince = sent;
      this.lastKeepalive = sent;
    } else if (this.now() - this.lastKeepalive >= this.ttlMs / 6) {
      const sent = this.now();
      // A failed keep-alive (a member down: the client tries another) is retried at the next tick.
      this.lastKeepalive = 0;
      const ttl = await this.cluster.keepalive(this.leaseId, this.ttlMs / 6);
      this.lastKeepalive = sent;
      if (ttl <= 0) {
        this.lease = undefined;
        this.stepDown('etcd says our lease has expired');
        return;
      }
      this.aliveSince = sent;
    }
    if (this.ownEpoch === undefined) await this.campaign();
  }

  private async campaign(): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    const ns = this.cluster.ns;
    const r = await withTimeout('campaign', this.ttlMs, ns.if(LEADER, 'Create', '==', 0).then(lease.put(LEADER).value(JSON.stringify(this.self))).else(ns.get(LEADER)).commit());
    if (r.succeeded) {
      this.elected(Number(r.header.revision));
      return;
    }
    const kv = r.responses[0]?.response_range?.kvs?.[0];
    if (!kv) return;
    const epoch = Number(kv.create_revision);
    // The key under our own lease: an earlier campaign won, but its answer came too late to
    // lead on. Ours to take now that the lease is renewed, or nobody would lead while we
    // keep it alive.
    if (kv.lease === this.leaseId) {
      this.elected(epoch);
      return;
    }
    if (this.seen?.epoch !== epoch) {
      const identity = JSON.parse(kv.value.toString()) as ControllerIdentity;
      this.seen = { identity, epoch };
      this.elections++;
      this.logger.info({ leader: identity.name, epoch }, 'following');
    }
  }

  /** Leads under `epoch`, unless the lease may lapse before this controller could act (then the next round). */
  private elected(epoch: number): void {
    if (this.now() >= this.aliveSince + this.validMs) return;
    this.ownEpoch = epoch;
    this.lastTerm = epoch;
    this.seen = { identity: this.self, epoch };
    this.elections++;
    this.logger.info({ epoch }, 'elected leader');
    this.emit(true);
  }

  /** A transaction that applies only while `epoch` is the leader's: the fence of every write. */
  async fenced(epoch: number | undefined, ops: Parameters<ReturnType<Namespace['if']>['then']>, also?: { key: string; absent: true }): Promise<boolean> {
    if (epoch === undefined) throw new NotLeaderError(this.leader());
    let txn = this.cluster.ns.if(LEADER, 'Create', '==', epoch);
    if (also) txn = txn.and(also.key, 'Create', '==', 0);
    const r = await txn.then(...ops).commit();
    if (r.succeeded) return true;
    if (!also) throw new NotLeaderError(this.leader());
    const leader = await this.cluster.ns.get(LEADER).exec();
    if (Number(leader.kvs[0]?.create_revision ?? -1) !== epoch) throw new NotLeaderError(this.leader());
    return false;
  }
}

interface StoredMigration extends JournalMigration {
  /** Start order within one millisecond. */
  seq: number;
}

/** The store on etcd; every write is fenced by the leadership's epoch. */
export class EtcdStore implements ControllerStore {
  readonly kind = 'etcd' as const;
  /** Statistics, in memory (see the top of this file). */
  private readonly polls = new Map<string, { failedPolls: number; lastSeenAt: number | null; lastError: string | null }>();
  private readonly traffic = new Map<string, { traffic: VipTraffic; load: number; sampledAt: number }>();
  private seq = 0;

  constructor(
    private readonly cluster: EtcdCluster,
    private readonly leadership: EtcdLeadership,
    private readonly now: () => number = Date.now,
  ) {}

  private get ns(): Namespace {
    return this.cluster.ns;
  }

  private write(...ops: Parameters<ReturnType<Namespace['if']>['then']>): Promise<boolean> {
    return this.leadership.fenced(this.leadership.epoch(), ops);
  }

  private async writeAll(ops: Parameters<ReturnType<Namespace['if']>['then']>): Promise<void> {
    for (let i = 0; i < ops.length; i += TXN_OPS) await this.write(...ops.slice(i, i + TXN_OPS));
  }

  /** Refuses a store written by a newer vipshift; writes the version into a new one (as the leader). */
  async checkSchema(): Promise<void> {
    const v = await this.schemaVersion();
    if (v > SCHEMA_VERSION) {
      throw new Error(`etcd ${this.cluster.settings.prefix}: schema version ${v} is newer than this vipshift knows (${SCHEMA_VERSION}): refusing to touch it`);
    }
    if (v < SCHEMA_VERSION && this.leadership.leading()) await this.write(this.ns.put('schema').value(String(SCHEMA_VERSION)));
  }

  async schemaVersion(): Promise<number> {
    return Number((await this.ns.get('schema').string()) ?? 0);
  }

  async close(): Promise<void> {}

  private async all<T>(prefix: string): Promise<T[]> {
    return Object.values(await this.ns.getAll().prefix(prefix).strings()).map((v) => JSON.parse(v) as T);
  }

  async syncConfiguration(appliances: { name: string; api: string; capacity: number }[], vips: { name: string; owner: string }[]): Promise<void> {
    await this.checkSchema();
    const known = new Map((await this.all<InventoryAppliance>('appliances/')).map((a) => [a.name, a]));
    const knownVips = new Set((await this.all<InventoryVip>('vips/')).map((v) => v.name));
    const ops = [
      ...appliances.map((a) => {
        const stored = known.get(a.name);
        return this.ns.put(`appliances/${a.name}`).value(JSON.stringify({ ...blankAppliance(a.name), ...stored, api: a.api, capacity: a.capacity }));
      }),
      ...vips.filter((v) => !knownVips.has(v.name)).map((v) => this.ns.put(`vips/${v.name}`).value(JSON.stringify({ ...blankVip(v.name), owner: v.owner }))),
    ];
    await this.writeAll(ops);
  }

  async appliances(): Promise<InventoryAppliance[]> {
    return (await this.all<InventoryAppliance>('appliances/')).map((a) => ({ ...a, ...blankPoll, ...this.polls.get(a.name) })).sort(byName);
  }

  async vips(): Promise<InventoryVip[]> {
    return (await this.all<InventoryVip>('vips/'))
      .map((v) => {
        const t = this.traffic.get(v.name);
        return { ...v, traffic: t?.traffic ?? null, load: t?.load ?? null, sampledAt: t?.sampledAt ?? null };
      })
      .sort(byName);
  }

  async owners(): Promise<Map<string, string>> {
    return new Map((await this.all<InventoryVip>('vips/')).map((v) => [v.name, v.owner]));
  }

  private async updateVip(name: string, change: Partial<InventoryVip>): Promise<boolean> {
    const stored = await this.ns.get(`vips/${name}`).string();
    if (stored === null) return false;
    await this.write(this.ns.put(`vips/${name}`).value(JSON.stringify({ ...(JSON.parse(stored) as InventoryVip), ...change })));
    return true;
  }

  async setOwner(vip: string, owner: string): Promise<void> {
    await this.updateVip(vip, { owner });
  }

  async setPinned(vip: string, pinned: boolean): Promise<boolean> {
    return this.updateVip(vip, { pinned });
  }

  async setMaintenance(appliance: string, on: boolean): Promise<boolean> {
    const stored = await this.ns.get(`appliances/${appliance}`).string();
    if (stored === null) return false;
    await this.write(this.ns.put(`appliances/${appliance}`).value(JSON.stringify({ ...(JSON.parse(stored) as InventoryAppliance), maintenance: on })));
    return true;
  }

  async recordPoll(appliances: { name: string; ok: boolean; error?: string }[], vips: { name: string; traffic: VipTraffic; load: number }[]): Promise<void> {
    const at = this.now();
    for (const a of appliances) {
      const p = this.polls.get(a.name) ?? { ...blankPoll };
      this.polls.set(a.name, a.ok ? { failedPolls: 0, lastSeenAt: at, lastError: null } : { ...p, failedPolls: p.failedPolls + 1, lastError: a.error ?? 'no answer' });
    }
    for (const v of vips) this.traffic.set(v.name, { traffic: v.traffic, load: v.load, sampledAt: at });
  }

  async setting(key: string): Promise<string | undefined> {
    return (await this.ns.get(`settings/${key}`).string()) ?? undefined;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.write(this.ns.put(`settings/${key}`).value(value));
  }

  private eventOp(id: string, event: JournalEvent['event'], step: Phase | null, detail: string | null = null) {
    const e: JournalEvent = { at: this.now(), event, step, detail };
    return this.ns.put(`events/${id}/${randomUUID()}`).value(JSON.stringify(e));
  }

  private async stored(id: string): Promise<StoredMigration> {
    const raw = await this.ns.get(`migrations/${id}`).string();
    if (raw === null) throw new Error(`no migration '${id}' in the journal`);
    return JSON.parse(raw) as StoredMigration;
  }

  async begin(m: { id: string; vip: string; source: string; target: string; reason: MigrationReason }): Promise<void> {
    const record: StoredMigration = { ...m, state: 'running', step: null, committed: false, startedAt: this.now(), finishedAt: null, recovered: false, error: null, progress: null, seq: this.seq++ };
    const ok = await this.leadership.fenced(
      this.leadership.epoch(),
      [this.ns.put(`migrations/${m.id}`).value(JSON.stringify(record)), this.ns.put(`running/${m.vip}`).value(m.id), this.eventOp(m.id, 'begin', null, `${m.vip} ${m.source} → ${m.target} (${m.reason})`)],
      { key: `running/${m.vip}`, absent: true },
    );
    if (!ok) throw new Error(`${m.vip} has a migration running in the journal`);
  }

  async step(id: string, step: Phase): Promise<void> {
    if (!PHASES.includes(step)) throw new Error(`unknown step '${step}'`);
    const m = await this.stored(id);
    await this.write(this.ns.put(`migrations/${id}`).value(JSON.stringify({ ...m, step })), this.eventOp(id, 'step', step));
  }

  /** The commit point and step 4's record in one transaction (store.ts). */
  async commit(id: string): Promise<void> {
    const m = await this.stored(id);
    await this.write(this.ns.put(`migrations/${id}`).value(JSON.stringify({ ...m, committed: true, step: 'activate' })), this.eventOp(id, 'commit', 'move_entries'));
  }

  async end(id: string, outcome: { state: 'done' | 'aborted'; error?: string; progress?: MigrationProgress; recovered?: boolean }): Promise<void> {
    const m = await this.stored(id);
    const at = this.now();
    const ended: StoredMigration = { ...m, state: outcome.state, finishedAt: at, error: outcome.error ?? null, progress: outcome.progress ?? null, recovered: outcome.recovered ?? false };
    const ops = [
      this.ns.put(`migrations/${id}`).value(JSON.stringify(ended)),
      this.ns.delete().key(`running/${m.vip}`),
      this.eventOp(id, 'end', m.step, outcome.state + (outcome.error ? `: ${outcome.error}` : '')),
    ];
    if (outcome.state === 'done') {
      const vip = await this.ns.get(`vips/${m.vip}`).string();
      const record = vip === null ? blankVip(m.vip) : (JSON.parse(vip) as InventoryVip);
      ops.push(this.ns.put(`vips/${m.vip}`).value(JSON.stringify({ ...record, owner: m.target, lastMovedAt: at })));
    }
    await this.write(...ops);
  }

  async recovery(id: string, event: 'recover' | 'recover_failed', detail: string): Promise<void> {
    const m = await this.stored(id);
    await this.write(this.eventOp(id, event, m.step, detail));
  }

  async migration(id: string): Promise<JournalMigration | undefined> {
    const raw = await this.ns.get(`migrations/${id}`).string();
    return raw === null ? undefined : withoutSeq(JSON.parse(raw) as StoredMigration);
  }

  private async migrations(): Promise<StoredMigration[]> {
    return (await this.all<StoredMigration>('migrations/')).sort((a, b) => a.startedAt - b.startedAt || a.seq - b.seq);
  }

  async unfinished(): Promise<JournalMigration[]> {
    return (await this.migrations()).filter((m) => m.state === 'running').map(withoutSeq);
  }

  async history(limit = 50): Promise<JournalMigration[]> {
    return (await this.migrations()).reverse().slice(0, limit).map(withoutSeq);
  }

  /**
   * Deletes ended migrations (and their events) beyond the newest `keepMigrations`, then
   * compacts etcd's history to `keepRevisions` behind the current revision. The leader's.
   */
  async prune(): Promise<{ migrations: number; compactedTo: number | undefined }> {
    const { keepMigrations, keepRevisions } = this.cluster.settings.history ?? HISTORY_DEFAULTS;
    const ended = (await this.migrations()).filter((m) => m.state !== 'running').sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0) || b.seq - a.seq);
    const old = ended.slice(keepMigrations);
    await this.writeAll(old.flatMap((m) => [this.ns.delete().key(`migrations/${m.id}`), this.ns.delete().prefix(`events/${m.id}/`)]));
    // Compaction is cluster-wide and changes no current value: it needs no fence, only a leader.
    if (!this.leadership.leading()) return { migrations: old.length, compactedTo: undefined };
    const revision = Number((await this.ns.get('schema').exec()).header.revision);
    const to = revision - keepRevisions;
    if (to <= this.compactedTo) return { migrations: old.length, compactedTo: undefined };
    try {
      await this.cluster.client.kv.compact({ revision: String(to) });
    } catch (err) {
      // Another leader (or etcd's own auto-compaction) went further already.
      if (!/compacted/.test((err as Error).message)) throw err;
    }
    this.compactedTo = to;
    return { migrations: old.length, compactedTo: to };
  }

  private compactedTo = 0;

  async events(id: string): Promise<JournalEvent[]> {
    const r = await this.ns.getAll().prefix(`events/${id}/`).sort('Create', 'Ascend').exec();
    return r.kvs.map((kv) => JSON.parse(kv.value.toString()) as JournalEvent);
  }
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const blankPoll = { failedPolls: 0, lastSeenAt: null, lastError: null };
const blankAppliance = (name: string): InventoryAppliance => ({ name, api: '', capacity: 1, maintenance: false, ...blankPoll });
const blankVip = (name: string): InventoryVip => ({ name, owner: '', pinned: false, lastMovedAt: null, traffic: null, load: null, sampledAt: null });
const withoutSeq = ({ seq: _, ...m }: StoredMigration): JournalMigration => m;
