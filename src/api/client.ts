/**
 * Client of a vipshift API (server.ts): signs every request with our key, checks that every
 * response is signed by the cluster member we meant to talk to, and turns error answers into
 * ApiError { status, field?, message }.
 *
 *   const lb1 = new ApiClient('http://192.0.2.11:8441', loadCredentials(dir, 'ctl'));
 *   await lb1.post('/v1/vips/vip1/prepare', {});
 *   const entries = await lb1.stream('GET', '/v1/vips/vip1/entries');        // Readable (binary)
 *   await lb2.upload('POST', '/v1/vips/vip1/entries', entries);              // binary in, JSON out
 *
 * The server's identity (the audience the requests are signed for) is options.peer, or asked
 * once from the server (IDENTITY_PATH) when not given.
 */
import { Agent, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EMPTY_SHA256, HEADER, IDENTITY_PATH, STREAMING, safeEqual, sha256Hex, signRequest, verifyResponse } from './auth.js';
import type { Credentials } from './auth.js';
import { FrameSigner, FrameVerifier } from './frames.js';

export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when there was no valid answer (network, timeout, bad signature). */
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ApiClientOptions {
  /** Identity of the API's owner (lb1, ctl...). Asked from the server when not given. */
  peer?: string;
  /** Per request, until the whole answer is in (JSON) or until the headers are in (streams). Default 10 s. */
  timeoutMs?: number;
  /** Largest JSON answer accepted. Default 16 MiB. */
  maxResponseBytes?: number;
}

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

type Body = Buffer | Readable | undefined;

export class ApiClient {
  private readonly target: URL;
  private readonly socketPath: string | undefined;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private peer: string | undefined;
  private skewMs: number | undefined;

  constructor(
    readonly baseUrl: string,
    private readonly credentials: Credentials,
    options: ApiClientOptions = {},
  ) {
    if (baseUrl.startsWith('unix:')) {
      this.socketPath = baseUrl.slice('unix:'.length);
      this.target = new URL('http://localhost');
    } else {
      this.target = new URL(baseUrl);
      if (this.target.protocol !== 'http:') throw new Error(`API URL ${baseUrl}: only http: (requests are signed, not encrypted)`);
    }
    this.peer = options.peer;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxResponseBytes = options.maxResponseBytes ?? 16 * 1024 * 1024;
  }

  get<T = unknown>(path: string, options?: RequestOptions): Promise<T> {
    return this.json<T>('GET', path, undefined, options);
  }
  post<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.json<T>('POST', path, body, options);
  }
  put<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.json<T>('PUT', path, body, options);
  }
  delete<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.json<T>('DELETE', path, body, options);
  }

  /**
   * A request whose answer is a binary stream (ctx.stream on the server): resolves, once the
   * headers are in, to a Readable of the verified bytes. It errors if a frame is forged or the
   * stream is cut. Non-2xx answers reject with ApiError.
   */
  async stream(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<Readable> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const { signal, cancel } = this.deadline(options);
    try {
      const { res, peer, signature, contentSha256 } = await this.send(method, path, payload, { signal });
      if (contentSha256 !== STREAMING) {
        const data = await this.readVerified(res, contentSha256, peer);
        throwIfError(method, path, res.statusCode ?? 0, data);
        return Readable.from([data]);
      }
      if ((res.statusCode ?? 0) >= 300) {
        res.destroy();
        throw new ApiError(res.statusCode ?? 0, `${method} ${path}: ${res.statusCode} with a streamed body`);
      }
      const verifier = new FrameVerifier(this.credentials.peers.get(peer)!, Buffer.from(signature, 'base64'), peer);
      res.on('error', (err) => verifier.destroy(err));
      verifier.on('error', () => res.destroy());
      return res.pipe(verifier);
    } catch (err) {
      throw wrap(err, method, path, signal);
    } finally {
      // The deadline covers the wait for the answer's headers; a long stream may then take its time.
      cancel();
    }
  }

  /** A request whose body is a binary stream (a route with rawBody), sent as signed frames; answers JSON. */
  upload<T = unknown>(method: string, path: string, source: Readable | AsyncIterable<Buffer | string>, options: RequestOptions = {}): Promise<T> {
    return this.exchange<T>(method, path, source instanceof Readable ? source : Readable.from(source), options);
  }

  /**
   * How far the server's clock is ahead of ours, from the Date header of its last answer
   * (whole seconds, so within about a second); undefined before any answer.
   */
  get clockSkewMs(): number | undefined {
    return this.skewMs;
  }

  /** Closes idle keep-alive sockets. */
  close(): void {
    this.agent.destroy();
  }

  private json<T>(method: string, path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    return this.exchange<T>(method, path, body === undefined ? undefined : Buffer.from(JSON.stringify(body)), options);
  }

  /** Sends a body (JSON bytes or a stream of frames) and reads a verified JSON answer. */
  private async exchange<T>(method: string, path: string, body: Body, options: RequestOptions): Promise<T> {
    const { signal, cancel } = this.deadline(options);
    try {
      const { res, peer, contentSha256 } = await this.send(method, path, body, { signal });
      const data = await this.readVerified(res, contentSha256, peer);
      throwIfError(method, path, res.statusCode ?? 0, data);
      return parseJson(data) as T;
    } catch (err) {
      throw wrap(err, method, path, signal);
    } finally {
      cancel();
    }
  }

  private deadline(options: RequestOptions): { signal: AbortSignal; cancel: () => void } {
    const timeout = new AbortController();
    const ms = options.timeoutMs ?? this.timeoutMs;
    const timer = setTimeout(() => timeout.abort(new ApiError(0, `timed out after ${ms} ms`)), ms);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout.signal]) : timeout.signal;
    return { signal, cancel: () => clearTimeout(timer) };
  }

  private async audience(signal?: AbortSignal): Promise<string> {
    if (this.peer !== undefined) return this.peer;
    const res = await this.raw('GET', IDENTITY_PATH, {}, undefined, signal);
    const data = await readAll(res, 4096);
    const parsed = parseJson(data) as { identity?: unknown };
    if (res.statusCode !== 200 || typeof parsed?.identity !== 'string') throw new ApiError(0, `${this.baseUrl} did not say who it is`);
    if (!this.credentials.peers.has(parsed.identity)) throw new ApiError(0, `${this.baseUrl} says it is '${parsed.identity}', not a member of the cluster`);
    this.peer = parsed.identity;
    return this.peer;
  }

  /** Sends a signed request; resolves when the answer's headers are in and their signature holds. */
  private async send(
    method: string,
    path: string,
    body: Body,
    options: RequestOptions,
  ): Promise<{ res: IncomingMessage; peer: string; signature: string; contentSha256: string }> {
    if (!path.startsWith('/')) throw new Error(`API path '${path}' must start with '/'`);
    const audience = await this.audience(options.signal);
    const streaming = body instanceof Readable;
    const contentSha256 = streaming ? STREAMING : body ? sha256Hex(body) : EMPTY_SHA256;
    const signed = signRequest(this.credentials, { method, path, audience, contentSha256 });
    const headers: OutgoingHttpHeaders = { ...signed };
    if (body instanceof Buffer) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = body.length;
    } else if (streaming) headers['content-type'] = 'application/octet-stream';
    const res = await this.raw(method, path, headers, body, options.signal, signed[HEADER.signature]);
    const verdict = verifyResponse(this.credentials, { status: res.statusCode ?? 0, headers: res.headers, requestNonce: signed[HEADER.nonce]!, expectedPeer: audience });
    const date = res.headers.date ? Date.parse(res.headers.date) : NaN;
    // The Date header is whole seconds: +500 ms makes its mean error zero.
    if (Number.isFinite(date)) this.skewMs = date + 500 - Date.now();
    if (!verdict.ok) {
      res.destroy();
      throw new ApiError(0, `${method} ${path} on ${this.baseUrl}: ${verdict.message}`);
    }
    return { res, peer: verdict.peer, signature: verdict.signature, contentSha256: verdict.contentSha256 };
  }

  private raw(method: string, path: string, headers: OutgoingHttpHeaders, body: Body, signal?: AbortSignal, signature?: string): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({
        method,
        path,
        headers,
        agent: this.agent,
        ...(this.socketPath ? { socketPath: this.socketPath } : { host: this.target.hostname, port: this.target.port || 80 }),
        ...(signal ? { signal } : {}),
      });
      req.once('response', resolve);
      req.once('error', reject);
      if (body instanceof Readable) {
        const signer = new FrameSigner(this.credentials.privateKey, Buffer.from(signature!, 'base64'));
        // The server may answer (and refuse) before the whole stream is sent: that error is the answer's.
        pipeline(body, signer, req).catch((err: unknown) => req.destroy(err as Error));
      } else req.end(body);
    });
  }

  private async readVerified(res: IncomingMessage, contentSha256: string, peer: string): Promise<Buffer> {
    const data = await readAll(res, this.maxResponseBytes);
    if (contentSha256 === STREAMING || !safeEqual(contentSha256, sha256Hex(data))) {
      throw new ApiError(0, `answer from '${peer}' does not match its signed digest`);
    }
    return data;
  }
}

async function readAll(res: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      res.destroy();
      throw new ApiError(0, `answer larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function parseJson(data: Buffer): unknown {
  if (data.length === 0) return undefined;
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new ApiError(0, `answer is not JSON: ${(err as Error).message}`);
  }
}

function throwIfError(method: string, path: string, status: number, data: Buffer): void {
  if (status >= 200 && status < 300) return;
  let message = `HTTP ${status}`;
  let field: string | undefined;
  try {
    const body = JSON.parse(data.toString('utf8')) as { error?: unknown; field?: unknown };
    if (typeof body.error === 'string') message = body.error;
    if (typeof body.field === 'string') field = body.field;
  } catch {
    // not JSON: keep the status line
  }
  throw new ApiError(status, `${method} ${path}: ${message}`, field);
}

function wrap(err: unknown, method: string, path: string, signal: AbortSignal): ApiError {
  if (err instanceof ApiError) return err;
  if (signal.aborted && signal.reason instanceof ApiError) return new ApiError(0, `${method} ${path}: ${signal.reason.message}`);
  if (signal.aborted) return new ApiError(0, `${method} ${path}: aborted`);
  return new ApiError(0, `${method} ${path}: ${(err as Error).message}`);
}
