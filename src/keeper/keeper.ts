/**
 * The keeper process (docs/replication.md): stores the table copies appliances push (store.ts) and
 * answers "entries of VIP v" to an appliance taking a VIP over, from its copies and, in dnat
 * mode with `sockdiag` on, from this server's own socket table (rebuild.ts, patent variant 1).
 *
 * API (src/api: every request signed by a cluster member, every answer signed by the keeper):
 *   POST   /v1/copies               body: a copies batch (batch.ts), binary, streamed as signed frames
 *                                   → { upserted, deleted }; a malformed batch → 400 naming the field
 *   GET    /v1/vips/:vip/copies     ?source=merged|copies|socket-table (default merged)
 *                                   → an entry-record stream (entry-record.ts: "VSCT" header, 80-byte records)
 *   DELETE /v1/vips/:vip/copies     → { deleted }
 *   GET    /v1/status               → counts per VIP, database size, schema version
 *   POST   /v1/vips/:vip/backends   body: a backend change (config/edit.ts), from the controller
 *                                   → { vip, backends }: applied to the VIP rules at once and
 *                                   written into the keeper's configuration file
 * `:vip` is a VIP's name from the configuration or its address.
 * `merged` = every copy, plus a rebuilt entry for each ESTABLISHED socket of a dnat VIP that no
 * copy covers (connections younger than the replication interval); `copies` and
 * `socket-table` give one source only.
 *
 * The keeper's VIPs bound what it stores (config/vip-records.ts: a copy of a connection to a
 * server that is not one of its VIP's backends is refused). A backend added or removed
 * through the controller reaches the keeper too: the change is written into its file (edited
 * in place, validated, replaced atomically), so a restarted keeper runs on its last copy
 * while the controller is away.
 */
import { networkInterfaces } from 'node:os';
import { Readable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { Counter, register as defaultRegistry, type Registry } from 'prom-client';
import { z } from 'zod';
import { Authenticator, type Credentials } from '../api/auth.js';
import { checkRecords } from '../config/vip-records.js';
import { backendChangeSchema, editVipBackends, type BackendChange, type ConfigFile } from '../config/edit.js';
import { ConfigError } from '../config/load.js';
import { HttpError, createApiServer, type ApiServer, type RouteRoles } from '../api/server.js';
import { metricsRoute } from '../metrics/metrics.js';
import type { VipConfig } from '../config/appliance.js';
import { RECORD_SIZE, encodeStreamHeader, rec } from '../netlink/entry-record.js';
import { ipv4FromNumber } from '../packet/ipv4.js';
import type { DiagSocket } from '../netlink/sockdiag.js';
import { BATCH_HEADER_SIZE, BatchError, MAX_BATCH_ITEMS, decodeBatch } from './batch.js';
import type { KeeperConfig } from '../config/keeper.js';
import { cannotRebuild, connectionKey, rebuildRecords } from './rebuild.js';
import { CopyStore } from './store.js';

/**
 * The keeper API's route table (docs/api.md): copies are written by appliances only, read back
 * by an appliance taking a VIP over (or the operator).
 */
export const KEEPER_ROLES: RouteRoles = {
  'POST /v1/copies': ['appliance'],
  'GET /v1/vips/:vip/copies': ['appliance', 'admin'],
  'DELETE /v1/vips/:vip/copies': ['appliance', 'admin'],
  'GET /v1/status': ['admin', 'appliance', 'monitor'],
  'POST /v1/vips/:vip/backends': ['admin', 'controller'],
  'GET /metrics': ['admin', 'monitor'],
};

/** The IPv4 addresses of this host's interfaces (the server the keeper runs on). */
export function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => a.address);
}

/** The largest POST body: MAX_BATCH_ITEMS upserts (deletes are smaller). */
export const MAX_BATCH_BYTES = BATCH_HEADER_SIZE + MAX_BATCH_ITEMS * RECORD_SIZE;

/** Response header saying how many records came from each source (informational, not signed). */
export const SOURCES_HEADER = 'x-vipshift-copies-sources';

export type CopiesSource = 'merged' | 'copies' | 'socket-table';

/** What the keeper reads of its server for a rebuild (server-sockets.ts). */
export interface SocketTable {
  tcpSockets(localPorts: number[]): Promise<DiagSocket[]>;
  /** The networks of the server's interfaces, as CIDR ("198.18.0.101/24"). */
  networks(): Promise<string[]>;
  close(): void;
}

export interface KeeperOptions {
  credentials: Credentials;
  /** Its configuration file, where backend changes are written (without it they are refused). */
  configFile?: ConfigFile<KeeperConfig>;
  /** The server's socket table; required when config.sockdiag is on. */
  socketTable?: SocketTable;
  logger?: Logger;
  metrics?: Registry;
  now?: () => number;
}

function counter(registry: Registry, name: string, help: string, labelNames: string[] = []): Counter<string> {
  return (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

async function readLimited(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `batch larger than ${limit} bytes (${MAX_BATCH_ITEMS} items)`, 'body');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

export class Keeper {
  readonly store: CopyStore;
  private readonly api: ApiServer;
  private readonly logger: Logger;
  /** The configuration running now: a backend change replaces its VIPs. */
  private current: KeeperConfig;
  private vipsByName = new Map<string, VipConfig>();
  private vipsByAddress = new Map<string, VipConfig>();
  private insideAddresses = new Set<string>();
  /** Backend changes, one at a time (each reads and writes the file). */
  private changing: Promise<unknown> = Promise.resolve();
  /** This server's addresses as numbers: the only servers whose connections are stored here. */
  private readonly ownServers: Set<number>;
  private expiryTimer: NodeJS.Timeout | undefined;

  constructor(
    config: KeeperConfig,
    private readonly options: KeeperOptions,
  ) {
    if (config.sockdiag && !options.socketTable) throw new Error('keeper: sockdiag is on but no socket table was given');
    this.logger = options.logger ?? pino({ name: 'keeper' });
    this.current = config;
    this.useVips(config.vips);
    this.ownServers = new Set((config.addresses ?? hostAddresses()).map((a) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0)));
    this.store = new CopyStore(config.database, options.now ? { now: options.now } : {});
    const registry = options.metrics ?? defaultRegistry;
    const upserted = counter(registry, 'vipshift_keeper_copies_upserted_total', 'Copies written by appliances.');
    const deleted = counter(registry, 'vipshift_keeper_copies_deleted_total', 'Copies deleted by appliances (destroyed connections).');
    const refused = counter(registry, 'vipshift_keeper_batches_refused_total', 'Copies batches refused as malformed.');
    const foreign = counter(registry, 'vipshift_keeper_foreign_batches_refused_total', 'Copies batches refused for naming a server other than this one, by appliance.', ['peer']);
    const notOurs = counter(registry, 'vipshift_keeper_copies_refused_total', 'Copies refused for not belonging to a VIP of this keeper\'s configuration (mark, address, port, server, inside address), by appliance and reason.', ['peer', 'reason']);
    const restored = counter(registry, 'vipshift_keeper_restored_records_total', 'Entry records handed out, by source.', ['source']);

    this.api = createApiServer({
      name: 'keeper',
      authenticator: new Authenticator(options.credentials),
      logger: this.logger,
      metrics: registry,
      roles: KEEPER_ROLES,
      routes: [
        {
          method: 'POST',
          path: '/v1/copies',
          rawBody: true,
          handler: async (ctx) => {
            const body = await readLimited(ctx.body as Readable, MAX_BATCH_BYTES);
            let result;
            try {
              const batch = decodeBatch(body);
              // Only this server's connections: another server's copies are not ours to hold.
              for (let o = 0; o < batch.upserts.length; o += RECORD_SIZE) {
                if (!this.ownServers.has(rec.serverAddress(batch.upserts, o))) {
                  foreign.inc({ peer: ctx.peer });
                  const server = ipv4FromNumber(rec.serverAddress(batch.upserts, o));
                  this.logger.warn({ peer: ctx.peer, server }, 'copies batch refused: a copy of another server\'s connection');
                  throw new HttpError(403, `server ${server} is not this keeper's server (${this.config.keeper})`, `upserts[${o / RECORD_SIZE}].server`);
                }
              }
              // Only copies of our VIPs, each as its VIP's configuration allows (its mark,
              // address, ports, servers, inside address): the others are dropped and counted.
              const check = checkRecords(batch.upserts, this.config.vips);
              if (check.refused > 0) {
                for (const [reason, n] of Object.entries(check.reasons)) notOurs.inc({ peer: ctx.peer, reason }, n);
                this.logger.warn({ peer: ctx.peer, refused: check.refused, reasons: check.reasons }, 'copies that belong to no VIP of this keeper refused');
              }
              result = { ...this.store.apply({ upserts: check.accepted, deletes: batch.deletes }, ctx.peer), refused: check.refused };
            } catch (err) {
              if (!(err instanceof BatchError)) throw err;
              refused.inc();
              this.logger.warn({ peer: ctx.peer, field: err.field }, `copies batch refused: ${err.message}`);
              throw new HttpError(400, err.message, err.field);
            }
            upserted.inc(result.upserted);
            deleted.inc(result.deleted);
            return result;
          },
        },
        {
          method: 'GET',
          path: '/v1/vips/:vip/copies',
          query: z.strictObject({ source: z.enum(['merged', 'copies', 'socket-table']).default('merged') }),
          handler: async (ctx) => {
            const { address, vip } = this.resolve(ctx.params.vip!);
            const { copies, rebuilt } = await this.restore(address, vip, (ctx.query as { source: CopiesSource }).source);
            restored.inc({ source: 'copies' }, copies.length / RECORD_SIZE);
            restored.inc({ source: 'socket-table' }, rebuilt.length / RECORD_SIZE);
            ctx.res.setHeader(SOURCES_HEADER, `copies=${copies.length / RECORD_SIZE}, socket-table=${rebuilt.length / RECORD_SIZE}`);
            return ctx.stream(Readable.from([encodeStreamHeader(), copies, rebuilt].filter((b) => b.length > 0)));
          },
        },
        {
          method: 'DELETE',
          path: '/v1/vips/:vip/copies',
          handler: (ctx) => {
            const { address } = this.resolve(ctx.params.vip!);
            const n = this.store.deleteVip(address);
            this.logger.info({ peer: ctx.peer, vip: address, deleted: n }, 'copies of a VIP deleted');
            return { deleted: n };
          },
        },
        { method: 'GET', path: '/v1/status', handler: () => this.status() },
        {
          method: 'POST',
          path: '/v1/vips/:vip/backends',
          body: backendChangeSchema,
          handler: async (ctx) => {
            const change = ctx.body as BackendChange;
            try {
              const result = await this.changeBackend(ctx.params.vip!, change);
              this.logger.info({ peer: ctx.peer, vip: result.vip, action: `backend ${change.action}`, backend: change.port === undefined ? change.address : `${change.address}:${change.port}`, weight: change.weight }, `backend ${change.action} ${result.vip}`);
              return result;
            } catch (err) {
              if (err instanceof ConfigError) throw new HttpError(400, err.message);
              throw err;
            }
          },
        },
        metricsRoute(registry),
      ],
    });
  }

  /** Opens the store and the API; sweeps expired copies every config.expiryIntervalSeconds seconds. */
  static async start(config: KeeperConfig, options: KeeperOptions): Promise<Keeper> {
    const keeper = new Keeper(config, options);
    if (config.vips.length === 0) keeper.logger.warn('no VIP configured (vips): every copy an appliance pushes will be refused');
    try {
      await keeper.api.listen(config.api.listen);
    } catch (err) {
      keeper.store.close();
      options.socketTable?.close();
      throw new Error(`keeper ${config.keeper}: cannot listen on ${config.api.listen}: ${(err as Error).message}`);
    }
    keeper.expiryTimer = setInterval(() => keeper.sweep(), config.expiryIntervalSeconds * 1000);
    keeper.expiryTimer.unref();
    return keeper;
  }

  get url(): string {
    return this.api.url;
  }

  get config(): KeeperConfig {
    return this.current;
  }

  private useVips(vips: VipConfig[]): void {
    this.vipsByName = new Map(vips.map((v) => [v.name, v]));
    this.vipsByAddress = new Map(vips.map((v) => [v.address, v]));
    this.insideAddresses = new Set(vips.map((v) => v.insideAddress));
  }

  /**
   * Adds, removes, weights or drains a backend of a VIP of this keeper: the configuration
   * file is edited, validated and replaced, then the VIP rules follow. Nothing changes if the
   * VIP or the backend is not there or the result is invalid (ConfigError).
   */
  changeBackend(vip: string, change: BackendChange): Promise<{ vip: string; backends: { address: string; port?: number; weight: number }[] }> {
    const run = this.changing.then(async () => {
      const file = this.options.configFile;
      if (!file) throw new HttpError(409, `keeper ${this.current.keeper} was started without a configuration file to write the change to`, 'vip');
      const name = this.resolve(vip).vip?.name;
      if (!name) throw new HttpError(404, `VIP '${vip}' is not in this keeper's configuration`, 'vip');
      const { text } = await file.read();
      const edited = editVipBackends(file.parse, text, file.path, name, change);
      await file.write(edited.text);
      this.current = { ...this.current, vips: edited.config.vips };
      this.useVips(edited.config.vips);
      const backends = this.vipsByName.get(name)!.backends.map((b) => ({ address: b.address, ...(b.port === undefined ? {} : { port: b.port }), weight: b.weight }));
      return { vip: name, backends };
    });
    this.changing = run.catch(() => undefined);
    return run;
  }

  /** Deletes expired copies now; returns how many. */
  sweep(): number {
    try {
      const n = this.store.expire();
      if (n > 0) this.logger.info({ expired: n }, 'expired copies deleted');
      return n;
    } catch (err) {
      this.logger.error({ err }, 'expiry sweep failed');
      return 0;
    }
  }

  status(): {
    keeper: string;
    schemaVersion: number;
    database: { path: string; bytes: number };
    sockdiag: boolean;
    copies: number;
    vips: { vip: string; name?: string; copies: number; lastUpdate: string }[];
  } {
    const vips = this.store.counts().map((c) => {
      const name = this.vipsByAddress.get(c.vip)?.name;
      return { vip: c.vip, ...(name ? { name } : {}), copies: c.copies, lastUpdate: new Date(c.lastUpdate).toISOString() };
    });
    return {
      keeper: this.config.keeper,
      schemaVersion: this.store.schemaVersion,
      database: { path: this.store.path, bytes: this.store.databaseBytes() },
      sockdiag: this.config.sockdiag,
      copies: vips.reduce((n, v) => n + v.copies, 0),
      vips,
    };
  }

  /** The records of one VIP from the sources asked for (see the header comment). */
  async restore(address: string, vip: VipConfig | undefined, source: CopiesSource): Promise<{ copies: Buffer; rebuilt: Buffer }> {
    const copies = source === 'socket-table' ? Buffer.alloc(0) : this.store.recordsOfVip(address);
    const why = !this.config.sockdiag ? 'sockdiag is off in this keeper\'s configuration' : !vip ? `VIP ${address} is not in this keeper's configuration` : cannotRebuild(vip);
    if (source === 'copies' || (source === 'merged' && why)) return { copies, rebuilt: Buffer.alloc(0) };
    if (why) throw new HttpError(409, `cannot rebuild from the socket table: ${why}`, 'query.source');
    const covered = new Set<string>();
    for (let o = 0; o < copies.length; o += RECORD_SIZE) {
      covered.add(connectionKey(ipv4FromNumber(rec.clientAddress(copies, o)), rec.clientPort(copies, o), rec.vipPort(copies, o)));
    }
    const table = this.options.socketTable!;
    const [sockets, networks] = await Promise.all([table.tcpSockets([...new Set(vip!.backends.flatMap((b) => vip!.ports.map((p) => b.port ?? p)))]), table.networks()]);
    return { copies, rebuilt: rebuildRecords(vip!, sockets, { insideAddresses: this.insideAddresses, networks }, covered) };
  }

  private resolve(param: string): { address: string; vip?: VipConfig } {
    const byName = this.vipsByName.get(param);
    if (byName) return { address: byName.address, vip: byName };
    const m = IPV4.exec(param);
    if (m && m.slice(1).every((o) => Number(o) <= 255)) {
      const vip = this.vipsByAddress.get(param);
      return vip ? { address: param, vip } : { address: param };
    }
    throw new HttpError(404, `no VIP '${param}' (neither a configured name nor an IPv4 address)`, 'vip');
  }

  async close(): Promise<void> {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    await this.api.close();
    this.options.socketTable?.close();
    this.store.close();
  }
}
