/**
 * The operator's connection to the site's controllers (CLI commands, the console): it asks the
 * controller it knows, and follows a leader change by itself. A follower answers reads; a write
 * it refuses with 421 (routes.ts), and a controller that does not answer at all, make the
 * client ask the others who leads (`/v1/controllers`) and go there. With one controller it
 * is a plain ApiClient.
 */
import type { Readable } from 'node:stream';
import { ApiClient, ApiError, type RequestOptions } from '../api/client.js';
import type { Credentials } from '../api/auth.js';
import { call as callEndpoint } from '../api/contract.js';
import { controllerApi } from './api.js';

export interface ControllerEndpoint {
  /** Its identity (the requests' audience); asked from the server when unknown. */
  name?: string;
  url: string;
}

/** How long a write waits for an election before it gives up with the controllers' word. */
const ELECTION_WAIT_MS = 8000;

export class LeaderClient {
  private readonly clients: ApiClient[];
  private current = 0;

  constructor(
    private readonly endpoints: ControllerEndpoint[],
    credentials: Credentials,
    options: { timeoutMs?: number } = {},
  ) {
    if (endpoints.length === 0) throw new Error('no controller to talk to');
    this.clients = endpoints.map((e) => new ApiClient(e.url, credentials, { ...(e.name ? { peer: e.name } : {}), timeoutMs: options.timeoutMs ?? 60_000 }));
  }

  /** The controller asked now, as the console shows it. */
  get baseUrl(): string {
    const e = this.endpoints[this.current]!;
    return this.endpoints.length > 1 && e.name ? `${e.name} ${e.url}` : e.url;
  }

  /** The clock skew measured against the controller asked now (see ApiClient). */
  get clockSkewMs(): number | undefined {
    return this.clients[this.current]!.clockSkewMs;
  }

  get<T = unknown>(path: string, options?: RequestOptions): Promise<T> {
    return this.call((c) => c.get<T>(path, options), false);
  }

  post<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.call((c) => c.post<T>(path, body, options), true);
  }

  put<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.call((c) => c.put<T>(path, body, options), true);
  }

  delete<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.call((c) => c.delete<T>(path, body, options), true);
  }

  stream(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<Readable> {
    return this.call((c) => c.stream(method, path, body, options), method !== 'GET');
  }

  close(): void {
    for (const c of this.clients) c.close();
  }

  private async call<T>(work: (c: ApiClient) => Promise<T>, write: boolean): Promise<T> {
    if (this.clients.length === 1) return work(this.clients[0]!);
    const deadline = Date.now() + ELECTION_WAIT_MS;
    let last: unknown;
    for (;;) {
      try {
        return await work(this.clients[this.current]!);
      } catch (err) {
        last = err;
        // A controller that answers a read with 5xx cannot reach its store (cut off from etcd):
        // no better than one that does not answer.
        const unreachable = err instanceof ApiError && (err.status === 0 || (!write && err.status >= 500));
        const misdirected = err instanceof ApiError && err.status === 421;
        if (!unreachable && !misdirected) throw err;
        // A read went unanswered: any other controller can answer it.
        if (!(await this.findLeader()) && !write && unreachable) this.current = (this.current + 1) % this.clients.length;
      }
      if (Date.now() > deadline) throw last;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Asks the controllers in turn who leads and makes it the current one; false when none knows. */
  private async findLeader(): Promise<boolean> {
    for (let i = 0; i < this.clients.length; i++) {
      const at = (this.current + i) % this.clients.length;
      const cp = await callEndpoint(this.clients[at]!, controllerApi.controllers, {}, { timeoutMs: 2000 }).catch(() => undefined);
      if (!cp?.leader) continue;
      const leader = cp.leader;
      const found = this.endpoints.findIndex((e) => e.name === leader.name || e.url === leader.api);
      if (found >= 0) {
        this.current = found;
        return true;
      }
    }
    return false;
  }
}
