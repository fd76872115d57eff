/**
 * The controller's view of one appliance: its agent API (src/appliance/agent-api.ts) behind
 * the MigrationAgent interface the four steps use. Every answer is parsed by the endpoint's
 * schema.
 */
import { createInterface } from 'node:readline';
import type { ApiClient, RequestOptions } from '../api/client.js';
import { call, open } from '../api/contract.js';
import { agentApi, importLine, type AgentStatus } from '../appliance/agent-api.js';
import type { HoldRelease, ImportResult, MigrationAgent } from '../migration/migration.js';
import type { AccessPage, PageQuery } from '../nat/access-page.js';

export class AgentClient implements MigrationAgent {
  constructor(
    readonly name: string,
    readonly url: string,
    private readonly api: ApiClient,
  ) {}

  private step(endpoint: (typeof agentApi)['prepare' | 'forget' | 'abort' | 'deleteEntries'], vip: string): Promise<unknown> {
    return call(this.api, endpoint, { params: { name: vip } });
  }

  status(options?: RequestOptions): Promise<AgentStatus> {
    return call(this.api, agentApi.status, {}, options);
  }

  async prepare(vip: string): Promise<void> {
    await this.step(agentApi.prepare, vip);
  }

  async releaseAddress(vip: string): Promise<void> {
    await call(this.api, agentApi.address, { params: { name: vip }, body: { action: 'release' } });
  }

  async claimAddress(vip: string): Promise<void> {
    await call(this.api, agentApi.address, { params: { name: vip }, body: { action: 'claim' } });
  }

  /** The target answers with one JSON line per batch created, then a summary line. */
  async importEntries(vip: string, source: MigrationAgent, onProgress: (moved: number) => void): Promise<ImportResult> {
    const response = await open(this.api, agentApi.import, { params: { name: vip }, body: { from: source.name } });
    let result: ImportResult | undefined;
    let failure: string | undefined;
    for await (const text of createInterface({ input: response, crlfDelay: Infinity })) {
      if (!text) continue;
      const line = importLine.safeParse(JSON.parse(text));
      if (!line.success) throw new Error(`${this.name}: importing ${vip}: unexpected progress line ${text.slice(0, 200)}`);
      const event = line.data;
      if ('error' in event) failure = event.error;
      else if ('created' in event) result = { created: event.created, failed: event.failed };
      else onProgress(event.moved);
    }
    if (failure) throw new Error(`${this.name}: importing ${vip} failed: ${failure}`);
    if (!result) throw new Error(`${this.name}: importing ${vip} ended without a summary`);
    return result;
  }

  async deleteEntries(vip: string): Promise<void> {
    await this.step(agentApi.deleteEntries, vip);
  }

  async forget(vip: string): Promise<void> {
    await this.step(agentApi.forget, vip);
  }

  activate(vip: string): Promise<HoldRelease> {
    return call(this.api, agentApi.activate, { params: { name: vip } });
  }

  async abort(vip: string): Promise<void> {
    await this.step(agentApi.abort, vip);
  }

  /** One page of the VIP's access table, sorted and filtered by the appliance. */
  entriesPage(vip: string, query: Partial<PageQuery>): Promise<AccessPage> {
    return call(this.api, agentApi.entriesPage, { params: { name: vip }, query });
  }
}
