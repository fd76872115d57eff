/**
 * The console's I/O: what it asks the controller, and the actions it sends. Every failure
 * becomes data to show (Fetched.error) — the console never throws at the operator — and a
 * route the controller does not have becomes "not available".
 */
import { ApiError } from '../api/client.js';
import { call, type JsonApi } from '../api/contract.js';
import { controllerApi as api } from '../controller/api.js';
import { pageQuery } from '../appliance/agent-api.js';
import { accessRows, selectedAppliance, selectedVip, valueOf, type Action, type ConsoleData, type Fetched, type Ui } from './model.js';

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
export type ControllerApi = JsonApi & { readonly baseUrl: string; readonly clockSkewMs: number | undefined };

export class ConsoleSource {
  constructor(
    private readonly client: ControllerApi,
    private readonly fixedTarget?: string,
  ) {}

  /** The controller the console talks to now (it changes with the leader). */
  get target(): string {
    return this.fixedTarget ?? this.client.baseUrl;
  }

  /**
   * Between two refreshes while a migration runs: only its progress, which the controller
   * has in memory (a status asks every appliance and costs far more).
   */
  async progress(data: ConsoleData, now = Date.now()): Promise<ConsoleData> {
    const site = data.site;
    if (!site || 'unavailable' in site || ('error' in site && !site.last)) return data;
    try {
      const migrations = await call(this.client, api.migrations, {}, { timeoutMs: TIMEOUT_MS });
      if ('ok' in site) return { ...data, site: { ...site, ok: { ...site.ok, migrations } }, now };
      return { ...data, site: { ...site, last: { ...site.last!, migrations } }, now };
    } catch {
      return data; // the next full refresh says what is wrong
    }
  }

  /** One refresh: the status always, and what the current view needs. */
  async refresh(data: ConsoleData, ui: Ui, height: number, now = Date.now()): Promise<ConsoleData> {
    const site = await fetched(data.site, now, () => call(this.client, api.status, {}, { timeoutMs: TIMEOUT_MS }));
    const next: ConsoleData = { ...data, site, now, target: this.target };
    const skew = this.client.clockSkewMs;
    if (skew !== undefined) next.clockSkewMs = skew;
    if ('ok' in site) {
      if (data.site && 'ok' in data.site) next.previous = { site: data.site.ok, at: data.site.at };
      next.rebalance = { ok: site.ok.rebalance, at: now };
    }
    // The plan is asked on its view, and on the site view where it gives load against capacity.
    if ((ui.view === 'plan' || ui.view === 'site') && !(data.plan && 'unavailable' in data.plan)) {
      next.plan = await fetched(data.plan, now, () => call(this.client, api.plan, {}, { timeoutMs: TIMEOUT_MS }));
    }
    if (ui.view === 'access') {
      const probe = { ...next, now };
      const appliance = selectedAppliance(probe, ui);
      const vip = selectedVip(probe, ui);
      if (appliance && vip) {
        const query = { offset: ui.access.offset, limit: accessRows(height), sort: pageQuery.shape.sort.parse(ui.access.sort), filter: ui.access.filter };
        const previous = valueOf(data.page)?.vip === vip ? data.page : undefined;
        next.page = await fetched(previous, now, () => call(this.client, api.entriesPage, { params: { name: appliance, vip }, query }, { timeoutMs: TIMEOUT_MS }));
      }
    }
    return next;
  }

  /** Sends a confirmed action; resolves to what to tell the operator. */
  async act(action: Action): Promise<{ text: string; style: 'ok' | 'warn' | 'bad' }> {
    try {
      switch (action.kind) {
        case 'migrate': {
          const p = await call(this.client, api.migrate, { body: { vip: action.vip, to: action.to, wait: false } });
          return { text: `migration of ${action.vip} to ${action.to} started (id ${p.id.slice(0, 8)}): see Migrations (4)`, style: 'ok' };
        }
        case 'drain':
          // A drain answers when the appliance's VIPs have moved; meanwhile they show on the Migrations view.
          if (!action.on) {
            await call(this.client, api.maintenance, { params: { name: action.appliance }, body: { on: false } });
            return { text: `${action.appliance} is out of maintenance`, style: 'ok' };
          }
          {
            const left = (await call(this.client, api.drain, { params: { name: action.appliance }, body: {} }, { timeoutMs: 600_000 })).remaining;
            return left.length ? { text: `${action.appliance} drained but for ${left.join(', ')}`, style: 'warn' } : { text: `${action.appliance} drained (in maintenance)`, style: 'ok' };
          }
        case 'pin':
          await call(this.client, api.pin, { params: { name: action.vip }, body: { pinned: action.on } });
          return { text: `${action.vip} ${action.on ? 'pinned' : 'unpinned'}`, style: 'ok' };
        case 'rebalance':
          await call(this.client, api.setRebalance, { body: { mode: action.mode } });
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
