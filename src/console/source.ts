/**
 * The console's I/O: what it asks the controller, and the actions it sends. Every failure
 * becomes data to show (Fetched.error) — the console never throws at the operator — and a
 * route the controller does not have becomes "not available".
 */
import { ApiError, type ApiClient } from '../api/client.js';
import type { SiteStatus } from '../controller/controller.js';
import type { MigrationProgress } from '../migration/migration.js';
import type { AccessPage } from '../nat/access-page.js';
import { accessRows, selectedAppliance, selectedVip, valueOf, type Action, type ConsoleData, type Fetched, type PlanView, type Ui } from './model.js';

/** The controller routes the console uses (plan, rebalance, drain, maintenance and pin: the controller's branch). */
export const ROUTES = {
  status: '/v1/status',
  page: (appliance: string, vip: string) => `/v1/appliances/${encodeURIComponent(appliance)}/vips/${encodeURIComponent(vip)}/entries`,
  migrate: '/v1/migrations',
  migrations: '/v1/migrations',
  plan: '/v1/plan',
  rebalance: '/v1/rebalance',
  drain: (appliance: string) => `/v1/appliances/${encodeURIComponent(appliance)}/drain`,
  maintenance: (appliance: string) => `/v1/appliances/${encodeURIComponent(appliance)}/maintenance`,
  pin: (vip: string) => `/v1/vips/${encodeURIComponent(vip)}/pin`,
};

/**
 * Per request: refreshes never overlap, so a dead controller costs one timeout per refresh;
 * a status during a large migration may take seconds (every appliance counts its entries).
 */
const TIMEOUT_MS = 5_000;

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
/** The server answers a route it does not have with 404 "no route ..." (src/api/server.ts). */
const missingRoute = (err: unknown) => err instanceof ApiError && (err.status === 404 || err.status === 405) && /no route|not allowed/.test(err.message);

async function fetched<T>(previous: Fetched<T> | undefined, now: number, get: () => Promise<T>): Promise<Fetched<T>> {
  try {
    return { ok: await get(), at: now };
  } catch (err) {
    if (missingRoute(err)) return { unavailable: `the controller has no such route (${message(err)})` };
    const since = previous && 'error' in previous ? previous.since : now;
    const last = valueOf(previous);
    return { error: message(err), since, ...(last === undefined ? {} : { last }) };
  }
}

/** The controller connection the console needs (src/controller/leader-client.ts follows the leader). */
export type ControllerApi = Pick<ApiClient, 'get' | 'post' | 'clockSkewMs'> & { readonly baseUrl: string };

export class ConsoleSource {
  constructor(
    private readonly api: ControllerApi,
    private readonly fixedTarget?: string,
  ) {}

  /** The controller the console talks to now (it changes with the leader). */
  get target(): string {
    return this.fixedTarget ?? this.api.baseUrl;
  }

  /**
   * Between two refreshes while a migration runs: only its progress, which the controller
   * has in memory (a status asks every appliance and costs far more).
   */
  async progress(data: ConsoleData, now = Date.now()): Promise<ConsoleData> {
    const site = data.site;
    if (!site || 'unavailable' in site || ('error' in site && !site.last)) return data;
    try {
      const migrations = await this.api.get<MigrationProgress[]>(ROUTES.migrations, { timeoutMs: TIMEOUT_MS });
      if ('ok' in site) return { ...data, site: { ...site, ok: { ...site.ok, migrations } }, now };
      return { ...data, site: { ...site, last: { ...site.last!, migrations } }, now };
    } catch {
      return data; // the next full refresh says what is wrong
    }
  }

  /** One refresh: the status always, and what the current view needs. */
  async refresh(data: ConsoleData, ui: Ui, height: number, now = Date.now()): Promise<ConsoleData> {
    const site = await fetched(data.site, now, () => this.api.get<SiteStatus>(ROUTES.status, { timeoutMs: TIMEOUT_MS }));
    const next: ConsoleData = { ...data, site, now, target: this.target };
    const skew = this.api.clockSkewMs;
    if (skew !== undefined) next.clockSkewMs = skew;
    if ('ok' in site) {
      if (data.site && 'ok' in data.site) next.previous = { site: data.site.ok, at: data.site.at };
      const reported = (site.ok as SiteStatus & { rebalance?: unknown }).rebalance;
      if (typeof reported === 'string') next.rebalance = { ok: reported, at: now };
      else if (reported && typeof reported === 'object' && typeof (reported as { mode?: unknown }).mode === 'string') next.rebalance = { ok: (reported as { mode: string }).mode, at: now };
      else if (!next.rebalance || !('unavailable' in next.rebalance))
        next.rebalance = await fetched(data.rebalance, now, async () => (await this.api.get<{ mode: string }>(ROUTES.rebalance, { timeoutMs: TIMEOUT_MS })).mode);
    }
    // The plan is asked on its view, and on the site view where it gives load against capacity.
    if ((ui.view === 'plan' || ui.view === 'site') && !(data.plan && 'unavailable' in data.plan)) {
      next.plan = await fetched(data.plan, now, () => this.api.get<PlanView>(ROUTES.plan, { timeoutMs: TIMEOUT_MS }));
    }
    if (ui.view === 'access') {
      const probe = { ...next, now };
      const appliance = selectedAppliance(probe, ui);
      const vip = selectedVip(probe, ui);
      if (appliance && vip) {
        const q = new URLSearchParams({ offset: String(ui.access.offset), limit: String(accessRows(height)), sort: ui.access.sort, filter: ui.access.filter });
        const previous = valueOf(data.page)?.vip === vip ? data.page : undefined;
        next.page = await fetched(previous, now, () => this.api.get<AccessPage>(`${ROUTES.page(appliance, vip)}?${q}`, { timeoutMs: TIMEOUT_MS }));
      }
    }
    return next;
  }

  /** Sends a confirmed action; resolves to what to tell the operator. */
  async act(action: Action): Promise<{ text: string; style: 'ok' | 'warn' | 'bad' }> {
    try {
      switch (action.kind) {
        case 'migrate': {
          const p = await this.api.post<MigrationProgress>(ROUTES.migrate, { vip: action.vip, to: action.to });
          return { text: `migration of ${action.vip} to ${action.to} started (id ${p.id.slice(0, 8)}): see Migrations (4)`, style: 'ok' };
        }
        case 'drain':
          // A drain answers when the appliance's VIPs have moved; meanwhile they show on the Migrations view.
          if (!action.on) {
            await this.api.post(ROUTES.maintenance(action.appliance), { on: false });
            return { text: `${action.appliance} is out of maintenance`, style: 'ok' };
          }
          {
            const r = await this.api.post<{ remaining?: string[] }>(ROUTES.drain(action.appliance), {}, { timeoutMs: 600_000 });
            const left = r?.remaining ?? [];
            return left.length ? { text: `${action.appliance} drained but for ${left.join(', ')}`, style: 'warn' } : { text: `${action.appliance} drained (in maintenance)`, style: 'ok' };
          }
        case 'pin':
          await this.api.post(ROUTES.pin(action.vip), { pinned: action.on });
          return { text: `${action.vip} ${action.on ? 'pinned' : 'unpinned'}`, style: 'ok' };
        case 'rebalance':
          await this.api.post(ROUTES.rebalance, { mode: action.mode });
          return { text: `rebalancing is ${action.mode}`, style: 'ok' };
        default:
          return { text: '', style: 'ok' };
      }
    } catch (err) {
      if (missingRoute(err)) return { text: `${action.kind}: not available on this controller`, style: 'warn' };
      return { text: `${action.kind} refused: ${message(err)}`, style: 'bad' };
    }
  }
}
