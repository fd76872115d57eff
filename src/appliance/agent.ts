/**
 * The appliance's agent: serves agent-api.ts's endpoints over the Appliance. What the
 * controller calls to run the four steps, and what a target appliance calls on a source to
 * pull a VIP's entries (binary entry records, streamed as signed frames; never one JSON
 * object per entry).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Credentials } from '../api/auth.js';
import { ApiClient, ApiError } from '../api/client.js';
import { call, open, rolesOf, serve } from '../api/contract.js';
import { HttpError, type RequestContext, type Route, type RouteRoles } from '../api/server.js';
import { AccessPages, PageQueryError } from '../nat/access-page.js';
import { RECORD_SIZE, RecordStreamReader, encodeStreamHeader } from '../netlink/entry-record.js';
import { agentApi, type MigrationStepName } from './agent-api.js';
import { UnknownVipError, type Appliance } from './appliance.js';
import { ConfigError } from '../config/load.js';
import { ReconfigureError } from '../nat/engine.js';
import type { TakeoverReport } from '../replication/takeover.js';

/** The agent API's route table (docs/api.md), from the roles declared with each endpoint (agent-api.ts). */
export const AGENT_ROLES: RouteRoles = rolesOf(agentApi);

/** A record stream of records held in memory, in pieces of 1,000: the target creates while the rest is on its way. */
function recordStream(records: Buffer): Readable {
  return Readable.from(
    (function* () {
      yield encodeStreamHeader();
      for (let at = 0; at < records.length; at += 1000 * RECORD_SIZE) yield records.subarray(at, at + 1000 * RECORD_SIZE);
    })(),
  );
}

/** A whole (small) record stream, read into one buffer of records. */
async function readAll(stream: Readable): Promise<Buffer> {
  const reader = new RecordStreamReader();
  const parts: Buffer[] = [];
  for await (const piece of stream as AsyncIterable<Buffer>) {
    const whole = reader.push(piece);
    if (whole.length > 0) parts.push(Buffer.from(whole));
  }
  reader.end();
  return Buffer.concat(parts);
}

/**
 * Clients of the other appliances' agents, by name, from the configuration (failover.peers):
 * an import pulls only from one of them, never from a URL a request names. One client per
 * peer, made on first use; undefined for a name not configured.
 */
export function peerClients(peers: readonly { name: string; api: string }[], credentials: Credentials): (name: string) => ApiClient | undefined {
  const clients = new Map<string, ApiClient>();
  return (name) => {
    let client = clients.get(name);
    if (!client) {
      const peer = peers.find((p) => p.name === name);
      if (!peer) return undefined;
      clients.set(name, (client = new ApiClient(peer.api, credentials, { peer: peer.name, timeoutMs: 30_000 })));
    }
    return client;
  };
}

/** A migration step that cannot begin on this appliance now; the controller gives the VIP back. */
export class StepRefused extends Error {}

/**
 * Told of every migration step the controller runs here, before and after it: how failover
 * tells a planned move of a VIP's address from a failover.
 */
export interface MigrationStepObserver {
  /** Throws StepRefused when the step cannot begin here now (answered 409). */
  stepStarted(vip: string, step: MigrationStepName): void;
  stepEnded(vip: string, step: MigrationStepName, succeeded: boolean): void;
}

/** What the failover part adds to the agent: its status sections and the takeover. */
export interface AgentFailover extends MigrationStepObserver {
  statusSections(): Record<string, object>;
  takeOver(vip: string): Promise<TakeoverReport>;
  /** A migration's abort here: `abort`, or a takeover when VRRP made this appliance the VIP's master meanwhile. */
  abortMigration(vip: string, abort: () => Promise<void>): Promise<void>;
}

export interface AgentOptions {
  /** The authenticated client of another appliance's agent, by its name (peerClients). */
  peerClient: (name: string) => ApiClient | undefined;
  logger: Logger;
  failover?: AgentFailover;
  fence?: EpochFence;
}

/** Where the fence keeps the newest epoch across restarts of the appliance. */
export interface EpochStore {
  /** The newest epoch recorded (0 when none is). */
  load(): number;
  /** Records `epoch` durably before the fence accepts it; throws when it cannot. */
  save(epoch: number): void;
}

/**
 * The newest epoch in a file of its own (one decimal number), replaced atomically: written
 * beside it, flushed, renamed over it. A restarted appliance reads it back, so that a deposed
 * leader's step is refused after a restart as before one.
 */
export class FileEpochStore implements EpochStore {
  constructor(readonly file: string) {}

  load(): number {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    const epoch = Number(text.trim());
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(epoch)) throw new Error(`${this.file}: expected the newest controller epoch (a whole number), found '${text.trim().slice(0, 40)}'`);
    return epoch;
  }

  save(epoch: number): void {
    mkdirSync(path.dirname(this.file), { recursive: true });
    const next = `${this.file}.new`;
    writeFileSync(next, `${epoch}\n`, { flush: true });
    renameSync(next, this.file);
  }
}

/**
 * The newest leadership epoch a controller has shown us (agent-api.ts's epochQuery). A step
 * with an older epoch comes from a deposed leader and is refused, so that it cannot complete
 * a step after another controller took over. Steps without an epoch (a sole controller on
 * SQLite) are not affected. A newer epoch is recorded in the store before it is accepted.
 */
export class EpochFence {
  private newest: number;
  refused = 0;

  constructor(private readonly store?: EpochStore) {
    this.newest = store?.load() ?? 0;
  }

  check(epoch: number | undefined, logger: Logger): void {
    if (epoch === undefined) return;
    if (epoch < this.newest) {
      this.refused++;
      logger.warn({ epoch, newest: this.newest }, 'refused a request of a deposed controller');
      throw new HttpError(409, `controller epoch ${epoch} is older than ${this.newest}: a newer controller leads`, 'query.epoch');
    }
    if (epoch === this.newest) return;
    try {
      this.store?.save(epoch);
    } catch (err) {
      // Accepted but forgotten at a restart, it would let an older leader back in: refused.
      logger.error({ epoch, err: (err as Error).message }, 'could not record the controller epoch');
      throw new HttpError(503, `could not record controller epoch ${epoch}: ${(err as Error).message}`, 'query.epoch');
    }
    this.newest = epoch;
  }

  status(): { newest: number; refused: number } {
    return { newest: this.newest, refused: this.refused };
  }
}

/** A configuration refused: 400 with every file:line:field, 409 when it cannot apply now. */
async function configRefusals<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof ConfigError) throw new HttpError(400, err.message);
    if (err instanceof ReconfigureError) throw new HttpError(409, err.message);
    throw err;
  }
}

export function agentRoutes(appliance: Appliance, options: AgentOptions): Route[] {
  const { peerClient, logger, failover } = options;
  const fence = options.fence ?? new EpochFence();
  // A refusal names who sent what: a deposed leader's late request is told apart from a forgery.
  const fenceLog = (ctx: RequestContext<unknown, unknown>): Logger => logger.child({ caller: ctx.peer, request: `${ctx.req.method ?? ''} ${ctx.req.url ?? ''}` });
  // Every VIP route names a VIP of the configuration; an unknown one is a 404 on `name`.
  const vipOf = (ctx: RequestContext<unknown, unknown>): string => {
    const epoch = (ctx.query as { epoch?: unknown } | undefined)?.epoch;
    fence.check(typeof epoch === 'number' ? epoch : undefined, fenceLog(ctx));
    const name = ctx.params.name ?? '';
    try {
      appliance.vip(name);
    } catch (err) {
      if (err instanceof UnknownVipError) throw new HttpError(404, err.message, 'name');
      throw err;
    }
    return name;
  };
  // Each step's share on this appliance is logged with its time, and observed by failover.
  const stepStarted = (vip: string, name: MigrationStepName): void => {
    try {
      failover?.stepStarted(vip, name);
    } catch (err) {
      throw err instanceof StepRefused ? new HttpError(409, err.message, 'name') : err;
    }
  };
  const step = async <T>(vip: string, name: MigrationStepName, action: string, work: () => Promise<T>): Promise<T> => {
    stepStarted(vip, name);
    let succeeded = false;
    try {
      const result = await timed(vip, action, work);
      succeeded = true;
      return result;
    } finally {
      failover?.stepEnded(vip, name, succeeded);
    }
  };
  const timed = async <T>(vip: string, action: string, work: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const result = await work();
    logger.info({ vip, action, ms: Math.round((performance.now() - t0) * 100) / 100 }, `${action} ${vip}`);
    return result;
  };
  const ok = { ok: true } as const;
  const pages = new AccessPages((vip) => appliance.entryRecords(vip));
  const sourceOf = (name: string): ApiClient => {
    const source = peerClient(name);
    if (!source) throw new HttpError(400, `'${name}' is not an appliance of this one's configuration (failover.peers)`, 'from');
    return source;
  };
  const ms = (t0: number) => Math.round((performance.now() - t0) * 100) / 100;
  // A pre-copy's target answers a flood with SYN cookies from the start where its source does:
  // held until its own meter counted past the rate, the flood's SYNs would lengthen the hold.
  // Not carried, the meter still gets there: a failure here costs time, not a connection.
  const carrySynproxy = async (vip: string, source: ApiClient): Promise<string[] | string> => {
    try {
      const { ports } = await call(source, agentApi.synproxyPorts, { params: { name: vip } });
      await appliance.engageSynproxy(vip, ports);
      return ports.map((p) => `${p.port} for ${p.seconds} s`);
    } catch (err) {
      return `not carried: ${(err as Error).message}`;
    }
  };

  return [
    serve(agentApi.status, async () => ({ ...(await appliance.status()), ...failover?.statusSections(), controllerEpoch: fence.status() })),
    serve(agentApi.entriesPage, async (ctx) => {
      try {
        return await pages.page(vipOf(ctx), ctx.query);
      } catch (err) {
        if (err instanceof PageQueryError) throw new HttpError(400, err.message, err.field);
        throw err;
      }
    }),
    serve(agentApi.announceEpoch, async (ctx) => {
      fence.check(ctx.query.epoch, fenceLog(ctx));
      return { ...(await appliance.status()), ...failover?.statusSections(), controllerEpoch: fence.status() };
    }),
    serve(agentApi.prepare, async (ctx) => {
      const vip = vipOf(ctx);
      await step(vip, 'prepare', 'prepare', () => appliance.prepare(vip));
      return ok;
    }),
    serve(agentApi.address, async (ctx) => {
      const vip = vipOf(ctx);
      const { action } = ctx.body;
      await step(vip, 'address', `${action} address`, () => (action === 'release' ? appliance.releaseAddress(vip) : appliance.claimAddress(vip)));
      return ok;
    }),
    serve(agentApi.entries, (ctx) => {
      // Source side of step 3: the records stream out from the mirror, or as a dump decodes.
      const vip = vipOf(ctx);
      const out = new PassThrough();
      const t0 = performance.now();
      appliance.exportEntries(vip, (chunk) => out.write(chunk), { migration: ctx.query.for === 'migration' }).then(
        ({ records, skipped, from }) => {
          logger.info({ vip, action: 'export', records, skipped, from, ms: Math.round((performance.now() - t0) * 100) / 100 }, `export ${vip}`);
          out.end();
        },
        (err: Error) => out.destroy(err),
      );
      return ctx.stream(out, { contentType: 'application/octet-stream' });
    }),
    serve(agentApi.import, async (ctx) => {
      // Target side of step 3: pull from the source, create here, report progress as JSON lines.
      // After a pre-copy only the difference moves; a source that cannot vouch for it (409)
      // makes the target start over from the whole table, as without a pre-copy.
      const vip = vipOf(ctx);
      const source = sourceOf(ctx.body.from);
      // Step 2's claim first, in step 3's request: one round trip to the controller fewer in the hold.
      const c0 = performance.now();
      await step(vip, 'address', 'claim address', () => appliance.claimAddress(vip));
      const claimed = { claimMs: ms(c0) };
      const t0 = performance.now();
      let fallback: string | undefined;
      if (ctx.body.migration !== undefined) {
        let difference: Buffer | undefined;
        try {
          difference = await readAll(await open(source, agentApi.precopyChanges, { params: { name: vip }, body: { migration: ctx.body.migration, restart: false } }));
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 409)) throw err;
          fallback = err.message;
        }
        if (difference) {
          const r = await appliance.applyDifference(vip, difference, ctx.body.from);
          logger.info({ vip, action: 'import-difference', from: ctx.body.from, ...r, ms: ms(t0) }, `import ${vip} (difference)`);
          const summary = { created: r.total, failed: r.failed, difference: { created: r.created, ended: r.ended }, ...claimed };
          return ctx.stream(Readable.from([`${JSON.stringify(summary)}\n`]), { contentType: 'application/x-ndjson' });
        }
        logger.warn({ vip, reason: fallback }, `import ${vip}: no difference, copying the whole table`);
        await appliance.deleteEntries(vip, { inHold: true });
      }
      const records = await open(source, agentApi.entries, { params: { name: vip } });
      const progress = new PassThrough();
      appliance
        .importEntries(vip, records, (moved) => progress.write(`${JSON.stringify({ moved })}\n`), { source: ctx.body.from })
        .then(
          (result) => {
            logger.info({ vip, action: 'import', from: ctx.body.from, ...result, ms: ms(t0) }, `import ${vip}`);
            progress.end(`${JSON.stringify({ ...result, ...(fallback ? { fallback } : {}), ...claimed })}\n`);
          },
          (err: Error) => progress.end(`${JSON.stringify({ error: err.message })}\n`),
        );
      return ctx.stream(progress, { contentType: 'application/x-ndjson' });
    }),
    serve(agentApi.precopy, async (ctx) => {
      const vip = vipOf(ctx);
      const { from, migration } = ctx.body;
      const source = sourceOf(from);
      stepStarted(vip, 'precopy');
      const t0 = performance.now();
      const params = { name: vip };
      let snapshot: Readable;
      try {
        snapshot = await open(source, agentApi.precopySnapshot, { params, body: { migration } });
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) throw new HttpError(409, `${from}: ${err.message}`);
        throw err;
      }
      const nextDifference = async () => readAll(await open(source, agentApi.precopyChanges, { params, body: { migration, restart: true } }));
      const progress = new PassThrough();
      appliance.precopy(vip, snapshot, nextDifference, (moved) => progress.write(`${JSON.stringify({ moved })}\n`), from).then(
        async (outcome) => {
          const synproxy = await carrySynproxy(vip, source);
          const summary = { ...outcome, ms: ms(t0) };
          logger.info({ vip, action: 'precopy', from, migration, ...summary, synproxy }, `pre-copy ${vip}`);
          progress.end(`${JSON.stringify(summary)}\n`);
        },
        // Either way the migration stays open here (a failed pre-copy leaves step 3 the whole
        // table): step 4 or an abort ends it, not this.
        (err: Error) => {
          progress.end(`${JSON.stringify({ error: err.message })}\n`);
        },
      );
      return ctx.stream(progress, { contentType: 'application/x-ndjson' });
    }),
    serve(agentApi.precopySnapshot, async (ctx) => {
      // Source of a pre-copy: the snapshot, and a change journal from that moment on.
      const vip = vipOf(ctx);
      const t0 = performance.now();
      const records = await appliance.trackEntries(vip, ctx.body.migration);
      if (!records) throw new HttpError(409, 'the access table mirror cannot vouch for being complete: no pre-copy (step 3 copies the whole table)');
      logger.info({ vip, action: 'precopy-export', migration: ctx.body.migration, records: records.length / RECORD_SIZE, ms: ms(t0) }, `pre-copy export ${vip}`);
      return ctx.stream(recordStream(records), { contentType: 'application/octet-stream' });
    }),
    serve(agentApi.synproxyPorts, async (ctx) => ({ ports: await appliance.synproxyPorts(vipOf(ctx)) })),
    serve(agentApi.precopyChanges, async (ctx) => {
      const vip = vipOf(ctx);
      const t0 = performance.now();
      const diff = await appliance.entryChanges(vip, ctx.body.migration, ctx.body.restart);
      if ('refused' in diff) throw new HttpError(409, `no difference to vouch for: ${diff.refused}`);
      logger.info({ vip, action: 'changes-export', migration: ctx.body.migration, upserts: diff.upserts, ended: diff.ended, ms: ms(t0) }, `difference export ${vip}`);
      return ctx.stream(recordStream(diff.records), { contentType: 'application/octet-stream' });
    }),
    serve(agentApi.precopyEnd, (ctx) => {
      appliance.endTracking(vipOf(ctx));
      return ok;
    }),
    serve(agentApi.deleteEntries, async (ctx) => {
      const vip = vipOf(ctx);
      await timed(vip, 'delete-entries', () => appliance.deleteEntries(vip));
      return ok;
    }),
    serve(agentApi.forget, async (ctx) => {
      const vip = vipOf(ctx);
      await step(vip, 'forget', 'forget', () => appliance.forget(vip));
      return ok;
    }),
    serve(agentApi.activate, (ctx) => {
      const vip = vipOf(ctx);
      return step(vip, 'activate', 'activate', () => appliance.activate(vip));
    }),
    serve(agentApi.abort, async (ctx) => {
      const vip = vipOf(ctx);
      const abort = () => appliance.abort(vip);
      await step(vip, 'abort', 'abort', () => (failover ? failover.abortMigration(vip, abort) : abort()));
      return ok;
    }),
    ...(failover
      ? [
          serve(agentApi.takeover, (ctx) => {
            const vip = vipOf(ctx);
            return failover.takeOver(vip);
          }),
        ]
      : []),
    serve(agentApi.rebuildMirror, async () => {
      const t0 = performance.now();
      const mirror = await appliance.rebuildMirror();
      logger.info({ action: 'rebuild-mirror', entries: mirror?.entries, ms: Math.round((performance.now() - t0) * 100) / 100 }, 'access table mirror rebuilt');
      return mirror ?? { synced: false };
    }),
    serve(agentApi.reload, async () => {
      const t0 = performance.now();
      const result = await configRefusals(() => appliance.reload());
      logger.info({ action: 'reload', ...result, ms: Math.round((performance.now() - t0) * 100) / 100 }, 'configuration reloaded');
      return result;
    }),
    serve(agentApi.backends, async (ctx) => {
      const vip = vipOf(ctx);
      const { action, address, port, weight } = ctx.body;
      const result = await configRefusals(() => appliance.changeBackend(vip, { action, address, ...(port === undefined ? {} : { port }), ...(weight === undefined ? {} : { weight }) }));
      logger.info({ vip, action: `backend ${action}`, backend: port === undefined ? address : `${address}:${port}`, weight }, `backend ${action} ${vip}`);
      return result;
    }),
  ];
}
