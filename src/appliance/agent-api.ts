/**
 * The appliance agent's API, declared once: what the controller calls to run the four steps,
 * what a target calls on a source to pull a VIP's entries, what the console reads. The agent
 * (agent.ts) serves these endpoints; the controller's AgentClient and the failover's peer
 * reads call them. Answers are parsed by these schemas on the calling side, which keeps only
 * the fields declared here: a field the appliance adds to its status reaches the controller
 * and the console once it is declared.
 */
import { z } from 'zod';
import { endpoint, noBody, okAnswer } from '../api/contract.js';
import { SORT_KEYS } from '../nat/access-page.js';
import { backendChangeSchema } from '../config/edit.js';

const count = z.number().int().min(0);

/** A backend's health check on this appliance (src/health's BackendCheckStatus). */
export const backendCheckSchema = z.object({
  type: z.enum(['tcp', 'http', 'https', 'script']),
  checkPort: z.number().int(),
  inter: count,
  state: z.enum(['up', 'down']),
  reason: z.string(),
  lastCheck: z.object({ at: z.number(), outcome: z.enum(['pass', 'fail', 'timeout']), reason: z.string(), latencyMs: z.number() }).optional(),
  passesInRow: count,
  failuresInRow: count,
  checks: z.object({ pass: count, fail: count, timeout: count }),
  transitions: count,
  since: z.number(),
  applied: z.boolean(),
});

/** One VIP as an appliance reports it (VipStatus). */
export const vipStatusSchema = z.object({
  name: z.string(),
  address: z.string(),
  mode: z.enum(['normal', 'migrating', 'absent']),
  entries: count,
  packets: count,
  bytes: count,
  newConnections: count,
  rejected: count,
  synproxied: count,
  limitedVip: count,
  limitedSource: count,
  unavailable: count,
  held: count,
  released: count,
  overflowed: count,
  dropped: count,
  backends: z.array(
    z.object({
      address: z.string(),
      port: z.number().int().optional(),
      weight: count,
      state: z.enum(['up', 'down', 'drained']),
      reason: z.string(),
      connections: count,
      check: backendCheckSchema.optional(),
    }),
  ),
});

/** A change to one backend of a VIP (config/edit.ts): applied, then written to the configuration file. */
export { backendChangeSchema };
export type BackendChangeRequest = z.infer<typeof backendChangeSchema>;

/** What a reload or a backend change did: VIPs by name. */
export const reconfigureSchema = z.object({ added: z.array(z.string()), removed: z.array(z.string()), changed: z.array(z.string()) });
export type AgentVipStatus = z.infer<typeof vipStatusSchema>;

/** One VRRP instance as the speaker reports it (InstanceStatus). */
export const instanceStatusSchema = z.object({
  name: z.string(),
  interface: z.string(),
  vrid: z.number().int(),
  state: z.enum(['initialize', 'backup', 'master', 'fault']),
  priority: z.number().int(),
  addresses: z.array(z.string()),
});

/** The appliance's status; the parts it may or may not run report sections of their own. */
export const applianceStatusSchema = z.object({
  appliance: z.string(),
  vips: z.array(vipStatusSchema),
  vrrp: z.array(instanceStatusSchema),
  // Sections of the parts this appliance runs, passed on as they are.
  bfd: z.unknown().optional(),
  mirror: z.unknown().optional(),
  replication: z.unknown().optional(),
  failover: z.unknown().optional(),
  /** The conntrack table (table-watch.ts): the controller moves nothing onto one without room. */
  conntrack: z
    .object({ entries: count, max: count, headroom: count, full: z.boolean(), refused: count, earlyDropped: count, createsFailed: count })
    .optional(),
  /** The newest controller epoch this appliance has seen (kept across its restarts) and the requests refused as older. */
  controllerEpoch: z.object({ newest: count, refused: count }).optional(),
});
export type AgentStatus = z.infer<typeof applianceStatusSchema>;

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

export const accessPageSchema = z.object({
  vip: z.string(),
  total: count,
  matched: count,
  offset: count,
  limit: count,
  sort: z.string(),
  filter: z.string(),
  rows: z.array(
    z.object({ client: z.string(), vip: z.string(), inside: z.string().optional(), server: z.string(), tcpState: z.string(), timeout: z.number() }),
  ),
  snapshotAt: z.string(),
  snapshotAgeMs: z.number(),
  dumpMs: z.number(),
});

/**
 * One line of an import's answer: progress, the summary, or the error that ended it. After a
 * pre-copy the summary says what the difference made (created, and deleted as ended), or why
 * the source could not vouch for one (`fallback`: the whole table was copied).
 */
export const importLine = z.union([
  z.object({ error: z.string() }),
  z.object({ created: count, failed: count, difference: z.object({ created: count, ended: count }).optional(), fallback: z.string().optional(), claimMs: z.number().optional() }),
  z.object({ moved: count }),
]);

/** One line of a pre-copy's answer: progress, the summary (entries held, each further round's difference), or its error. */
export const precopyLine = z.union([
  z.object({ error: z.string() }),
  z.object({ created: count, failed: count, rounds: z.array(count), ms: z.number() }),
  z.object({ moved: count }),
]);

/** A migration's id, naming the source's change journal. */
const migrationId = z.string().min(1).max(100);

const sourceReport = z.looseObject({ name: z.string() });
export const takeoverReportSchema = z.looseObject({
  vip: z.string(),
  startedAt: z.number(),
  outcome: z.enum(['activated', 'already normal']),
  keepers: z.array(sourceReport),
  peers: z.array(sourceReport),
  created: count,
  existing: count,
  failed: count,
  released: count,
});

/**
 * Who may call what (docs/api.md): the migration steps are the controller's alone; a VIP's
 * entries go only to another appliance (a migration's target pulling them, a standby taking
 * over); reads (status, pages of the access table, events, metrics) to the operator, the
 * controller and monitors.
 */
const READ = ['admin', 'controller', 'monitor'] as const;
const STEP = ['controller'] as const;

/**
 * The query of a step: controllers on etcd send their leadership epoch (the agent refuses an
 * epoch older than the newest it has seen: a deposed leader cannot complete a step). Part of
 * the signed request target, so it cannot be changed on the way. A sole controller sends none.
 */
export const epochQuery = z.object({ epoch: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional() }).strict();

export const agentApi = {
  status: endpoint({ method: 'GET', path: '/v1/status', response: applianceStatusSchema, roles: READ }),
  /** The console's view of the access table: one sorted, filtered page, never the whole table. */
  entriesPage: endpoint({ method: 'GET', path: '/v1/vips/:name/entries/page', query: pageQuery, response: accessPageSchema, roles: READ }),
  /** Step 1 on the target (and an abort's hold on the source): the VIP's packets are held. */
  prepare: endpoint({ method: 'POST', path: '/v1/vips/:name/prepare', body: noBody, response: okAnswer, query: epochQuery, roles: STEP }),
  /** A newly elected controller shows its epoch before it acts, and learns the appliance's state. */
  announceEpoch: endpoint({ method: 'POST', path: '/v1/controller/epoch', body: noBody, query: epochQuery, response: applianceStatusSchema, roles: STEP }),
  /** Step 2: the source releases the VIP's addresses; a rollback claims them back on the source. */
  address: endpoint({ method: 'POST', path: '/v1/vips/:name/address', body: z.object({ action: z.enum(['release', 'claim']) }).strict(), response: okAnswer, query: epochQuery, roles: STEP }),
  /**
   * Source side of step 3: the VIP's entry records, streamed. `for=takeover`: a peer taking
   * the VIP over reads them, which is no migration here (the VIP's backends stay changeable).
   */
  entries: endpoint({ method: 'GET', path: '/v1/vips/:name/entries', query: z.strictObject({ for: z.enum(['migration', 'takeover']).default('migration') }), roles: ['appliance'] }),
  /**
   * Target side of step 3: pull from the source, answer JSON lines (importLine). `from` names
   * an appliance of the target's configuration (failover.peers); its URL comes from there.
   * It first claims the addresses (the end of step 2, in the same request; the summary says its
   * `claimMs`): the source has released them, and the difference is taken after the claim.
   * `claim: true` changes nothing here; the controller sends it because an appliance of the
   * version before claimed only when asked.
   */
  import: endpoint({
    method: 'POST',
    path: '/v1/vips/:name/import',
    body: z.object({ from: z.string().min(1), migration: migrationId.optional(), claim: z.literal(true).optional() }).strict(),
    query: epochQuery,
    roles: STEP,
  }),
  /**
   * Before step 1, on the target: hold the VIP, pull the source's snapshot (which starts its
   * change journal for `migration`) and create it, then differences while they are large.
   * Answers JSON lines (precopyLine). With `migration`, step 3's import then moves only the difference.
   */
  precopy: endpoint({ method: 'POST', path: '/v1/vips/:name/precopy', body: z.object({ from: z.string().min(1), migration: migrationId }).strict(), query: epochQuery, roles: STEP }),
  /** Source of a pre-copy: the VIP's entry records, streamed; its change journal starts with them. 409: the mirror cannot vouch. */
  precopySnapshot: endpoint({ method: 'POST', path: '/v1/vips/:name/precopy/snapshot', body: z.object({ migration: migrationId }).strict() , roles: ['appliance'] }),
  /**
   * Source: the difference since the snapshot (or the last `restart`), as entry records, those
   * that ended marked IPS_DYING. 409: the journal cannot vouch for it (lost events, overflow).
   */
  precopyChanges: endpoint({ method: 'POST', path: '/v1/vips/:name/precopy/changes', body: z.object({ migration: migrationId, restart: z.boolean().default(false) }).strict() , roles: ['appliance'] }),
  /**
   * Source of a pre-copy: the VIP's ports SYNPROXY answers for (nftables' `synproxy_active`) and
   * the seconds each has left, so that the target answers a flood the same way from the start.
   */
  synproxyPorts: endpoint({
    method: 'GET',
    path: '/v1/vips/:name/synproxy',
    response: z.object({ ports: z.array(z.object({ port: z.number().int().min(1).max(65535), seconds: z.number().int().min(0).max(3600) }).strict()) }).strict(),
    roles: ['appliance'],
  }),
  /** Source: the VIP's change journal goes (the migration gave up). */
  precopyEnd: endpoint({ method: 'POST', path: '/v1/vips/:name/precopy/end', body: noBody, response: okAnswer, query: epochQuery, roles: STEP }),
  deleteEntries: endpoint({ method: 'POST', path: '/v1/vips/:name/delete-entries', body: noBody, response: okAnswer, query: epochQuery, roles: STEP }),
  forget: endpoint({ method: 'POST', path: '/v1/vips/:name/forget', body: noBody, response: okAnswer, query: epochQuery, roles: STEP }),
  /** Step 4: the VIP forwards here; the held packets go out in order. */
  activate: endpoint({ method: 'POST', path: '/v1/vips/:name/activate', body: noBody, response: z.object({ released: count }), query: epochQuery, roles: STEP }),
  abort: endpoint({ method: 'POST', path: '/v1/vips/:name/abort', body: noBody, response: okAnswer, query: epochQuery, roles: STEP }),
  /** A standby takes the VIP over from the keepers' copies (failover, without the controller). */
  takeover: endpoint({ method: 'POST', path: '/v1/vips/:name/takeover', body: noBody, response: takeoverReportSchema, roles: ['admin', 'controller'] }),
  /**
   * Re-reads the configuration and applies the difference as one nft transaction (SIGHUP does
   * the same): 400 with every file:line:field of an invalid file, 409 for a change that cannot
   * be made at run time; either way nothing changed.
   */
  reload: endpoint({ method: 'POST', path: '/v1/reload', body: noBody, response: reconfigureSchema, roles: ['admin', 'controller'] }),
  /** Adds, removes, weights or drains a backend of the VIP; the VIP's backends afterwards. */
  backends: endpoint({
    method: 'POST',
    path: '/v1/vips/:name/backends',
    body: backendChangeSchema,
    response: z.object({ vip: z.string(), backends: vipStatusSchema.shape.backends }),
    roles: ['admin', 'controller'],
  }),
  /** Re-reads the whole access table into the mirror (entries made behind the appliance's back). */
  rebuildMirror: endpoint({
    method: 'POST',
    path: '/v1/mirror/rebuild',
    body: noBody,
    response: z.looseObject({ synced: z.boolean(), entries: count.optional() }),
    roles: ['admin'],
  }),
  /** The appliance's events as JSON lines (src/appliance/hooks.ts); `follow=true` keeps the stream open. */
  events: endpoint({ method: 'GET', path: '/v1/events', query: z.strictObject({ follow: z.enum(['true', 'false']).default('false') }), roles: READ }),
  /** The Prometheus exposition text, to a signed request (a stock Prometheus uses the metrics listener). */
  metrics: endpoint({ method: 'GET', path: '/metrics', roles: READ }),
} as const;

/** The steps of a migration the controller runs on this appliance, by endpoint. */
export type MigrationStepName = 'precopy' | 'prepare' | 'address' | 'activate' | 'abort' | 'forget';
