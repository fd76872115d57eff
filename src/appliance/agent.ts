/**
 * The appliance's agent API: what the controller calls to run the four steps, and what
 * a target appliance calls on a source to pull a VIP's entries (binary entry records,
 * streamed as signed frames; never one JSON object per entry).
 */
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Credentials } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
import { HttpError, type RequestContext, type Route, type RouteRoles } from '../api/server.js';
import { AccessPages, PageQueryError, SORT_KEYS } from '../nat/access-page.js';
import { UnknownVipError, type Appliance } from './appliance.js';

const empty = z.object({}).strict();

/**
 * The agent API's route table (docs/api.md): who may call what on an appliance. The
 * migration steps are the controller's alone; the entries of a VIP go only to another
 * appliance (a migration's target pulling them, a standby taking over); reads (status,
 * pages of the access table, events, metrics) to the operator, the controller and monitors.
 */
export const AGENT_ROLES: RouteRoles = {
  'GET /v1/status': ['admin', 'controller', 'monitor'],
  'GET /v1/vips/:name/entries/page': ['admin', 'controller', 'monitor'],
  'POST /v1/vips/:name/prepare': ['controller'],
  'POST /v1/vips/:name/address': ['controller'],
  'GET /v1/vips/:name/entries': ['appliance'],
  'POST /v1/vips/:name/import': ['controller'],
  'POST /v1/vips/:name/delete-entries': ['controller'],
  'POST /v1/vips/:name/forget': ['controller'],
  'POST /v1/vips/:name/activate': ['controller'],
  'POST /v1/vips/:name/abort': ['controller'],
  'POST /v1/mirror/rebuild': ['admin'],
  'POST /v1/vips/:name/takeover': ['admin', 'controller'],
  'GET /v1/events': ['admin', 'controller', 'monitor'],
  'GET /metrics': ['admin', 'controller', 'monitor'],
};

const sortKey = z.enum([...SORT_KEYS, ...SORT_KEYS.map((k) => `-${k}` as const)]);
/** Query of a page of the access table (access-page.ts). */
export const pageQuery = z
  .object({
    offset: z.coerce.number().int().min(0).default(0),
    limit: z.coerce.number().int().min(1).max(1000).default(50),
    sort: sortKey.default('client'),
    filter: z.string().max(200).default(''),
  })
  .strict();

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

/** `peerClient` gives the authenticated client of another appliance's agent by its name. */
export function agentRoutes(appliance: Appliance, peerClient: (name: string) => ApiClient | undefined, logger: Logger): Route[] {
  // Every VIP route names a VIP of the configuration; an unknown one is a 404 on `name`.
  const vipOf = (ctx: RequestContext): string => {
    const name = ctx.params.name ?? '';
    try {
      appliance.vip(name);
    } catch (err) {
      if (err instanceof UnknownVipError) throw new HttpError(404, err.message, 'name');
      throw err;
    }
    return name;
  };
  // Each step's share on this appliance is logged with its time.
  const timed = async <T>(vip: string, action: string, work: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const result = await work();
    logger.info({ vip, action, ms: Math.round((performance.now() - t0) * 100) / 100 }, `${action} ${vip}`);
    return result;
  };
  const vipAction = (action: string, run: (vip: string) => Promise<unknown>): Route => ({
    method: 'POST',
    path: `/v1/vips/:name/${action}`,
    body: empty,
    handler: async (ctx) => {
      const vip = vipOf(ctx);
      return (await timed(vip, action, () => run(vip))) ?? { ok: true };
    },
  });

  const pages = new AccessPages((vip) => appliance.entryRecords(vip));

  return [
    { method: 'GET', path: '/v1/status', handler: () => appliance.status() },
    {
      // The console's view of the access table: one sorted, filtered page, never the whole table.
      method: 'GET',
      path: '/v1/vips/:name/entries/page',
      query: pageQuery,
      handler: async (ctx: RequestContext<unknown, z.infer<typeof pageQuery>>) => {
        try {
          return await pages.page(vipOf(ctx), ctx.query);
        } catch (err) {
          if (err instanceof PageQueryError) throw new HttpError(400, err.message, err.field);
          throw err;
        }
      },
    },
    vipAction('prepare', (vip) => appliance.prepare(vip)),
    {
      method: 'POST',
      path: '/v1/vips/:name/address',
      body: z.object({ action: z.enum(['release', 'claim']) }).strict(),
      handler: async (ctx: RequestContext<{ action: 'release' | 'claim' }>) => {
        const vip = vipOf(ctx);
        await timed(vip, `${ctx.body.action} address`, () =>
          ctx.body.action === 'release' ? appliance.releaseAddress(vip) : appliance.claimAddress(vip),
        );
        return { ok: true };
      },
    },
    {
      // Source side of step 3: the records stream out from the mirror, or as a dump decodes.
      method: 'GET',
      path: '/v1/vips/:name/entries',
      handler: (ctx) => {
        const vip = vipOf(ctx);
        const out = new PassThrough();
        const t0 = performance.now();
        appliance.exportEntries(vip, (chunk) => out.write(chunk)).then(
          ({ records, skipped, from }) => {
            logger.info({ vip, action: 'export', records, skipped, from, ms: Math.round((performance.now() - t0) * 100) / 100 }, `export ${vip}`);
            out.end();
          },
          (err: Error) => out.destroy(err),
        );
        return ctx.stream(out, { contentType: 'application/octet-stream' });
      },
    },
    {
      // Target side of step 3: pull from the source, create here, report progress as JSON lines.
      method: 'POST',
      path: '/v1/vips/:name/import',
      // `from` names a configured appliance (failover.peers); its URL comes from our configuration.
      body: z.object({ from: z.string().min(1) }).strict(),
      handler: async (ctx: RequestContext<{ from: string }>) => {
        const vip = vipOf(ctx);
        const source = peerClient(ctx.body.from);
        if (!source) throw new HttpError(400, `'${ctx.body.from}' is not an appliance of this one's configuration (failover.peers)`, 'from');
        const t0 = performance.now();
        const records = await source.stream('GET', `/v1/vips/${encodeURIComponent(vip)}/entries`);
        const progress = new PassThrough();
        appliance
          .importEntries(vip, records, (moved) => progress.write(`${JSON.stringify({ moved })}\n`))
          .then(
            (result) => {
              logger.info({ vip, action: 'import', from: ctx.body.from, ...result, ms: Math.round((performance.now() - t0) * 100) / 100 }, `import ${vip}`);
              progress.end(`${JSON.stringify(result)}\n`);
            },
            (err: Error) => progress.end(`${JSON.stringify({ error: err.message })}\n`),
          );
        return ctx.stream(progress, { contentType: 'application/x-ndjson' });
      },
    },
    vipAction('delete-entries', (vip) => appliance.deleteEntries(vip)),
    vipAction('forget', (vip) => appliance.forget(vip)),
    vipAction('activate', (vip) => appliance.activate(vip)),
    vipAction('abort', (vip) => appliance.abort(vip)),
    {
      // Re-reads the whole access table into the mirror, for entries made behind the
      // appliance's back (conntrack -I, conntrackd, a benchmark's synthetic entries).
      method: 'POST',
      path: '/v1/mirror/rebuild',
      body: empty,
      handler: async () => {
        const t0 = performance.now();
        const mirror = await appliance.rebuildMirror();
        logger.info({ action: 'rebuild-mirror', entries: mirror?.entries, ms: Math.round((performance.now() - t0) * 100) / 100 }, 'access table mirror rebuilt');
        return mirror ?? { synced: false };
      },
    },
  ];
}
