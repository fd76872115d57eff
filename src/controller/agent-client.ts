/**
 * The controller's view of one appliance: its agent API (src/appliance/agent-api.ts) behind
 * the MigrationAgent interface the four steps use. Every answer is parsed by the endpoint's
 * schema.
 */
import { createInterface } from 'node:readline';
import type { z } from 'zod';
import type { ApiClient, RequestOptions } from '../api/client.js';
import { call, open } from '../api/contract.js';
import { agentApi, importLine, precopyLine, type AgentStatus } from '../appliance/agent-api.js';
import { NotLeaderError, type ControllerIdentity } from './leadership.js';
import type { HoldRelease, ImportOptions, ImportResult, MigrationAgent, PrecopyResult } from '../migration/migration.js';
import type { AccessPage, PageQuery } from '../nat/access-page.js';
import type { BackendChange } from '../config/edit.js';
import type { ReconfigureResult } from '../nat/engine.js';

/**
 * An appliance deletes a large VIP's entries a chunk at a time, reading each chunk's destroy
 * events before the next (AccessTableMirror.deletePaced): 1,000,000 took 24–26 s on the lab's
 * quiet machine, near the API's default 30 s. The clean-up comes after the commit point and an
 * abort's delete after the VIP was given back: waiting longer risks nothing.
 */
const DELETE_ENTRIES_TIMEOUT_MS = 300_000;

export class AgentClient implements MigrationAgent {
  /**
   * `epoch`: the epoch of this controller's latest leadership term (controllers on etcd). It
   * goes with every step (agent-api.ts's epochQuery) and stays the same after the term ended,
   * so that the appliance refuses what a deposed leader still sends (a request sent before the
   * term ended and delivered after). No step is sent while this controller does not lead.
   */
  constructor(
    readonly name: string,
    readonly url: string,
    private readonly api: ApiClient,
    private readonly leadership?: { termEpoch(): number | undefined; leading(): boolean; leader(): ControllerIdentity | undefined },
  ) {}

  private get query(): { epoch?: number } {
    if (!this.leadership) return {};
    if (!this.leadership.leading()) throw new NotLeaderError(this.leadership.leader());
    const epoch = this.leadership.termEpoch();
    return epoch === undefined ? {} : { epoch };
  }

  private step(endpoint: (typeof agentApi)['prepare' | 'forget' | 'abort' | 'deleteEntries'], vip: string, timeoutMs?: number): Promise<unknown> {
    return call(this.api, endpoint, { params: { name: vip }, query: this.query }, timeoutMs === undefined ? undefined : { timeoutMs });
  }

  async announceEpoch(): Promise<void> {
    if (!this.leadership) return;
    await call(this.api, agentApi.announceEpoch, { query: this.query }, { timeoutMs: 2000 });
  }

  status(options?: RequestOptions): Promise<AgentStatus> {
    return call(this.api, agentApi.status, {}, options);
  }

  changeBackend(vip: string, change: BackendChange): Promise<{ vip: string; backends: AgentStatus['vips'][number]['backends'] }> {
    return call(this.api, agentApi.backends, { params: { name: vip }, body: change });
  }

  reload(): Promise<ReconfigureResult> {
    return call(this.api, agentApi.reload);
  }

  async serves(vip: string): Promise<boolean> {
    return (await this.status({ timeoutMs: 5000 })).vips.find((v) => v.name === vip)?.mode === 'normal';
  }

  async prepare(vip: string): Promise<void> {
    await this.step(agentApi.prepare, vip);
  }

  async releaseAddress(vip: string): Promise<void> {
    await call(this.api, agentApi.address, { params: { name: vip }, body: { action: 'release' }, query: this.query });
  }

  async claimAddress(vip: string): Promise<void> {
    await call(this.api, agentApi.address, { params: { name: vip }, body: { action: 'claim' }, query: this.query });
  }

  /** The target answers with one JSON line per batch created, then a summary line. */
  async importEntries(vip: string, source: MigrationAgent, onProgress: (moved: number) => void, options: ImportOptions = {}): Promise<ImportResult> {
    // `claim` for an appliance of the version before, which claimed only when asked (this one always does).
    const body = { from: source.name, ...(options.precopied ? { migration: options.precopied } : {}), claim: true as const };
    const response = await open(this.api, agentApi.import, { params: { name: vip }, body, query: this.query });
    const { difference, fallback, claimMs, ...result } = await this.progressLines('importing', vip, response, importLine, onProgress);
    return { ...result, ...(difference ? { difference } : {}), ...(fallback ? { fallback } : {}), ...(claimMs !== undefined ? { claimMs } : {}) };
  }

  /** The same kind of lines as an import's: a pre-copy is an import before the hold, then its rounds. */
  async precopy(vip: string, source: MigrationAgent, migration: string, onProgress: (moved: number) => void): Promise<PrecopyResult> {
    const response = await open(this.api, agentApi.precopy, { params: { name: vip }, body: { from: source.name, migration }, query: this.query });
    const { created, failed, rounds } = await this.progressLines('pre-copying', vip, response, precopyLine, onProgress);
    return { created, failed, rounds };
  }

  async endTracking(vip: string): Promise<void> {
    await call(this.api, agentApi.precopyEnd, { params: { name: vip }, query: this.query });
  }

  /** JSON lines: progress (moved), then the summary, or the error that ended the work. */
  private async progressLines<S extends { created: number }>(
    what: string,
    vip: string,
    response: NodeJS.ReadableStream,
    schema: z.ZodType<{ error: string } | S | { moved: number }>,
    onProgress: (moved: number) => void,
  ): Promise<S> {
    let result: S | undefined;
    let failure: string | undefined;
    for await (const text of createInterface({ input: response, crlfDelay: Infinity })) {
      if (!text) continue;
      const line = schema.safeParse(JSON.parse(text));
      if (!line.success) throw new Error(`${this.name}: ${what} ${vip}: unexpected progress line ${text.slice(0, 200)}`);
      const event = line.data;
      if ('error' in event) failure = event.error;
      else if ('created' in event) result = event;
      else onProgress(event.moved);
    }
    if (failure) throw new Error(`${this.name}: ${what} ${vip} failed: ${failure}`);
    if (!result) throw new Error(`${this.name}: ${what} ${vip} ended without a summary`);
    return result;
  }

  async deleteEntries(vip: string): Promise<void> {
    await this.step(agentApi.deleteEntries, vip, DELETE_ENTRIES_TIMEOUT_MS);
  }

  async forget(vip: string): Promise<void> {
    await this.step(agentApi.forget, vip);
  }

  activate(vip: string): Promise<HoldRelease> {
    return call(this.api, agentApi.activate, { params: { name: vip }, query: this.query });
  }

  async abort(vip: string): Promise<void> {
    await this.step(agentApi.abort, vip);
  }

  /** One page of the VIP's access table, sorted and filtered by the appliance. */
  entriesPage(vip: string, query: Partial<PageQuery>): Promise<AccessPage> {
    return call(this.api, agentApi.entriesPage, { params: { name: vip }, query });
  }
}
