/**
 * The controller's view of one appliance: its agent API (src/appliance/agent.ts) behind the
 * MigrationAgent interface the four steps use.
 */
import { createInterface } from 'node:readline';
import type { ApiClient, RequestOptions } from '../api/client.js';
import type { HoldRelease, ImportResult, MigrationAgent } from '../migration/migration.js';
import type { AccessPage, PageQuery } from '../nat/access-page.js';
import type { ApplianceStatus } from '../appliance/appliance.js';

const vipPath = (vip: string, action: string) => `/v1/vips/${encodeURIComponent(vip)}/${action}`;

export class AgentClient implements MigrationAgent {
  constructor(
    readonly name: string,
    readonly url: string,
    private readonly api: ApiClient,
  ) {}

  status(options?: RequestOptions): Promise<ApplianceStatus> {
    return this.api.get('/v1/status', options) as Promise<ApplianceStatus>;
  }

  async prepare(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'prepare'), {});
  }

  async releaseAddress(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'address'), { action: 'release' });
  }

  async claimAddress(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'address'), { action: 'claim' });
  }

  /** The target answers with one JSON line per batch created, then a summary line. */
  async importEntries(vip: string, source: MigrationAgent, onProgress: (moved: number) => void): Promise<ImportResult> {
    const response = await this.api.stream('POST', vipPath(vip, 'import'), { from: source.name });
    let result: ImportResult | undefined;
    let failure: string | undefined;
    for await (const line of createInterface({ input: response, crlfDelay: Infinity })) {
      if (!line) continue;
      const event = JSON.parse(line) as { moved?: number; created?: number; failed?: number; error?: string };
      if (event.error) failure = event.error;
      else if (event.created !== undefined) result = { created: event.created, failed: event.failed ?? 0 };
      else if (event.moved !== undefined) onProgress(event.moved);
    }
    if (failure) throw new Error(`${this.name}: importing ${vip} failed: ${failure}`);
    if (!result) throw new Error(`${this.name}: importing ${vip} ended without a summary`);
    return result;
  }

  async deleteEntries(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'delete-entries'), {});
  }

  async forget(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'forget'), {});
  }

  activate(vip: string): Promise<HoldRelease> {
    return this.api.post(vipPath(vip, 'activate'), {}) as Promise<HoldRelease>;
  }

  async abort(vip: string): Promise<void> {
    await this.api.post(vipPath(vip, 'abort'), {});
  }

  /** One page of the VIP's access table, sorted and filtered by the appliance. */
  entriesPage(vip: string, query: Partial<PageQuery>): Promise<AccessPage> {
    const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]): [string, string] => [k, String(v)]));
    return this.api.get(`${vipPath(vip, 'entries/page')}?${q}`) as Promise<AccessPage>;
  }
}
