/**
 * A keeper's API from the appliance's side (replication pushes, takeover restores) and the
 * controller's (backend changes), over src/api's ApiClient: requests signed by the caller,
 * answers checked to come from the keeper.
 */
import { Readable } from 'node:stream';
import type { Credentials } from '../api/auth.js';
import { ApiClient, type ApiClientOptions } from '../api/client.js';
import { RECORD_SIZE, RecordStreamReader } from '../netlink/entry-record.js';
import { encodeBatch, type CopyBatch } from './batch.js';
import type { BackendChange } from '../config/edit.js';
import type { CopiesSource, Keeper } from './keeper.js';

export type KeeperStatus = ReturnType<Keeper['status']>;

export class KeeperClient {
  readonly api: ApiClient;

  constructor(baseUrl: string, credentials: Credentials, options: ApiClientOptions = {}) {
    this.api = new ApiClient(baseUrl, credentials, options);
  }

  /** Sends one batch (upserts then deletes, one transaction on the keeper). */
  push(batch: CopyBatch): Promise<{ upserted: number; deleted: number }> {
    return this.api.upload('POST', '/v1/copies', Readable.from([encodeBatch(batch)]));
  }

  /** Entry records of a VIP (by name or address), back to back without the stream header. */
  async copies(vip: string, source: CopiesSource = 'merged'): Promise<Buffer> {
    const stream = await this.api.stream('GET', `/v1/vips/${encodeURIComponent(vip)}/copies?source=${source}`);
    const reader = new RecordStreamReader();
    const parts: Buffer[] = [];
    for await (const piece of stream as AsyncIterable<Buffer>) {
      const whole = reader.push(piece);
      if (whole.length > 0) parts.push(Buffer.from(whole));
    }
    reader.end();
    return Buffer.concat(parts, reader.records * RECORD_SIZE);
  }

  deleteVip(vip: string): Promise<{ deleted: number }> {
    return this.api.delete(`/v1/vips/${encodeURIComponent(vip)}/copies`);
  }

  /** A backend change of a VIP it keeps copies of (the controller's fan-out): written into its configuration. */
  changeBackend(vip: string, change: BackendChange): Promise<Awaited<ReturnType<Keeper['changeBackend']>>> {
    return this.api.post(`/v1/vips/${encodeURIComponent(vip)}/backends`, change);
  }

  status(): Promise<KeeperStatus> {
    return this.api.get('/v1/status');
  }

  close(): void {
    this.api.close();
  }
}
