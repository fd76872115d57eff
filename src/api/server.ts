/**
 * The authenticated HTTP/JSON server every vipshift API runs on (appliance agent, controller,
 * keeper). Routes are data; the server authenticates (auth.ts) before it routes a request to a
 * handler, validates bodies and queries with zod, and signs every response.
 *
 *   const api = createApiServer({ name: 'agent', authenticator, routes: [
 *     { method: 'POST', path: '/v1/vips/:name/prepare', body: z.object({...}),
 *       handler: ({ params, body, peer }) => ({ prepared: params.name }) },
 *     { method: 'GET', path: '/v1/vips/:name/entries',
 *       handler: (ctx) => ctx.stream(dumpEntries(ctx.params.name)) },           // binary out
 *     { method: 'POST', path: '/v1/vips/:name/entries', rawBody: true,
 *       handler: async (ctx) => ({ created: await createFrom(ctx.body) }) },    // binary in
 *   ]});
 *   await api.listen('192.0.2.11:8441');
 *
 * A handler returns a JSON-able value (200; undefined → 204), reply(status, body), or the
 * promise of ctx.stream(source). It may throw HttpError(status, message, field) for a refusal
 * of its own; any other throw is a 500 whose message (never the stack) goes to the peer.
 * Errors are `{ error, field? }`; `field` is the zod path of the wrong field, dotted
 * (`servers.0.address`), prefixed `query.` for query parameters.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Counter, Gauge, register as defaultRegistry } from 'prom-client';
import type { Registry } from 'prom-client';
import type { ZodType } from 'zod';
import { Authenticator, HEADER, IDENTITY_PATH, STREAMING, sha256Hex } from './auth.js';
import type { RefusalReason, Role } from './auth.js';
import { FrameSigner, FrameVerifier } from './frames.js';
import { issueAt } from './issue.js';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** What ctx.stream() resolves to: the handler has sent the response itself. */
export const STREAMED: unique symbol = Symbol('vipshift.api.streamed');

export class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {}
}

/** A response other than 200: `return reply(202, { accepted: true })`. */
export function reply(status: number, body?: unknown): Reply {
  return new Reply(status, body);
}

/** A refusal a handler throws on purpose (404 for an unknown VIP, 409 for a conflict...). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface RequestContext<B = unknown, Q = unknown> {
  params: Record<string, string>;
  /** The validated JSON body; for `rawBody` routes the verified body stream (a Readable). */
  body: B;
  query: Q;
  /** The authenticated identity of the caller (its key id). */
  peer: string;
  /** Its role (peers.json): one of the route's. */
  role: Role;
  req: IncomingMessage;
  res: ServerResponse;
  /** Aborted when the peer goes away before the response is complete. */
  signal: AbortSignal;
  /** Sends `source` as a signed binary stream (frames.ts) and resolves when it is all sent. */
  stream(source: Readable | AsyncIterable<Buffer | string>, options?: { status?: number; contentType?: string }): Promise<typeof STREAMED>;
}

export type HandlerResult = unknown | Reply | typeof STREAMED;

export interface Route<B = any, Q = any> {
  method: Method;
  /** Segments starting with ':' are parameters: '/v1/vips/:name/prepare'. */
  path: string;
  body?: ZodType<B>;
  query?: ZodType<Q>;
  /** The body is a binary stream: ctx.body is a Readable of verified bytes. */
  rawBody?: boolean;
  handler(ctx: RequestContext<B, Q>): HandlerResult | Promise<HandlerResult>;
}

/**
 * Who may call what: the roles each route admits, keyed 'METHOD /path' as the route declares
 * them ('POST /v1/vips/:name/prepare': ['controller']). One table per API; a caller of
 * another role gets 403. The server refuses to start when a route has no line or a line no
 * route, so a new route cannot be open by omission.
 */
export type RouteRoles = Readonly<Record<string, readonly Role[]>>;

export const routeKey = (r: { method: string; path: string }): string => `${r.method} ${r.path}`;

export interface ApiServerOptions {
  /** The API's name in logs and metrics: 'agent', 'controller', 'keeper'. */
  name: string;
  routes: Route[];
  /** The API's route table (docs/api.md). */
  roles: RouteRoles;
  authenticator: Authenticator;
  logger?: Logger;
  metrics?: Registry;
  /** Largest JSON body accepted (413 beyond). Default 1 MiB. */
  maxBodyBytes?: number;
  limits?: Partial<ConnectionLimits>;
}

/**
 * What one peer, or a crowd of connections that never send a request, may hold of a server.
 * A connection that has sent nothing is cut after `idleMs`; beyond `maxConnections` the oldest
 * such connection makes room for the new one (a legitimate request still gets in while idle
 * ones pile up); one address holds at most `maxConnectionsPerAddress`.
 */
export interface ConnectionLimits {
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** A connection with no request in progress is cut after this long (Node cuts none by itself). */
  idleMs: number;
  /** The request's headers must be in within this long of its first byte. */
  headersTimeoutMs: number;
  /** The whole request (a streamed body included) within this long. */
  requestTimeoutMs: number;
  /** Between two requests on a kept-alive connection. */
  keepAliveMs: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  maxConnections: 1024,
  maxConnectionsPerAddress: 128,
  idleMs: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 120_000,
  keepAliveMs: 5_000,
};

export type ListenAddress = string | { host?: string; port: number } | { path: string };

export interface ApiServer {
  listen(address: ListenAddress): Promise<void>;
  close(): Promise<void>;
  /** Where it listens once listening: { address, port } or a socket path. */
  readonly address: AddressInfo | string | null;
  /** http://host:port (or unix:/path) for an ApiClient, once listening. */
  readonly url: string;
}

interface CompiledRoute {
  route: Route;
  segments: string[];
  roles: ReadonlySet<Role>;
}

function compile(name: string, routes: Route[], table: RouteRoles): CompiledRoute[] {
  const seen = new Set<string>();
  const compiled = routes.map((route) => {
    if (!route.path.startsWith('/')) throw new Error(`route path '${route.path}' must start with '/'`);
    const key = `${route.method} ${route.path.replace(/:[^/]+/g, ':')}`;
    if (seen.has(key)) throw new Error(`duplicate route ${route.method} ${route.path}`);
    seen.add(key);
    const roles = table[routeKey(route)];
    if (!roles) throw new Error(`API ${name}: route ${routeKey(route)} admits no role: give it a line in the API's route table`);
    return { route, segments: route.path.split('/').slice(1), roles: new Set(roles) };
  });
  const declared = new Set(routes.map(routeKey));
  const stray = Object.keys(table).filter((k) => !declared.has(k));
  if (stray.length > 0) throw new Error(`API ${name}: the route table names routes the API does not have: ${stray.join(', ')}`);
  return compiled;
}

/**
 * At most `burst` lines per `windowMs`, then silence until the window ends; the next line says
 * how many were left out. A peer hammering a route must not fill the journal.
 */
export class RateLimitedLog {
  private windowStart = -Infinity;
  private lines = 0;
  private suppressed = 0;

  constructor(
    private readonly burst = 10,
    private readonly windowMs = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Whether to write this line now, and how many were suppressed before it. */
  take(): { write: boolean; suppressed: number } {
    const now = this.now();
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.lines = 0;
    }
    if (this.lines >= this.burst) {
      this.suppressed++;
      return { write: false, suppressed: 0 };
    }
    this.lines++;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    return { write: true, suppressed };
  }
}

function match(segments: string[], parts: string[]): Record<string, string> | undefined {
  if (segments.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    const p = parts[i]!;
    if (s.startsWith(':')) {
      if (p === '') return undefined;
      params[s.slice(1)] = p;
    } else if (s !== p) return undefined;
  }
  return params;
}

function counter(registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<string>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

/** Dotted zod path: ['servers', 0, 'address'] → 'servers.0.address'. */
export function fieldPath(path: readonly PropertyKey[]): string {
  return path.map((p) => String(p)).join('.');
}

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new BodyTooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new BodyTooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

export function createApiServer(options: ApiServerOptions): ApiServer {
  const { name, authenticator } = options;
  const routes = compile(name, options.routes, options.roles);
  const logger = options.logger ?? pino({ name: `api-${name}` });
  const registry = options.metrics ?? defaultRegistry;
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const refused = counter(registry, 'vipshift_api_requests_refused_total', 'API requests refused before any handler ran, by reason.', ['api', 'reason']);
  const served = counter(registry, 'vipshift_api_requests_total', 'API requests answered, by route and status.', ['api', 'method', 'route', 'status']);
  const forbidden = counter(registry, 'vipshift_api_requests_forbidden_total', 'API requests refused because the caller\'s role may not call the route, by route and role.', ['api', 'method', 'route', 'role']);
  const refusalLog = new RateLimitedLog();
  const skew =
    (registry.getSingleMetric('vipshift_api_clock_skew_seconds') as Gauge<string> | undefined) ??
    new Gauge({
      name: 'vipshift_api_clock_skew_seconds',
      help: 'How far ahead of this process\'s clock a member\'s clock was in its last accepted request (its signed timestamp minus our time of receipt, network delay included); requests beyond ±30 s are refused.',
      labelNames: ['api', 'peer'],
      registers: [registry],
    });
  const limits: ConnectionLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const connectionsCut = counter(registry, 'vipshift_api_connections_cut_total', 'API connections closed by the server\'s limits, by reason (idle, evicted, per_address).', ['api', 'reason']);
  /** Every open connection → requests in progress on it. */
  const sockets = new Map<Socket, number>();
  /** Connections that have not sent a request yet, oldest first: the first to make room. */
  const fresh = new Set<Socket>();
  const perAddress = new Map<string, number>();
  const cut = (socket: Socket, reason: 'idle' | 'evicted' | 'per_address') => {
    connectionsCut.inc({ api: name, reason });
    socket.destroy();
  };

  const server: Server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const socket = req.socket;
    fresh.delete(socket);
    sockets.set(socket, (sockets.get(socket) ?? 0) + 1);
    res.once('close', () => {
      if (sockets.has(socket)) sockets.set(socket, Math.max(0, sockets.get(socket)! - 1));
    });
    handle(req, res).catch((err: unknown) => {
      logger.error({ err, method: req.method, url: req.url }, 'API request failed after its response started');
      res.destroy();
    });
  });
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? 'local';
    const held = perAddress.get(address) ?? 0;
    if (held >= limits.maxConnectionsPerAddress) return cut(socket, 'per_address');
    if (sockets.size >= limits.maxConnections) {
      const oldest = fresh.values().next().value;
      if (!oldest) return cut(socket, 'evicted'); // every connection is busy with a request: the new one waits its turn elsewhere
      fresh.delete(oldest);
      cut(oldest, 'evicted');
    }
    perAddress.set(address, held + 1);
    sockets.set(socket, 0);
    fresh.add(socket);
    socket.setTimeout(limits.idleMs);
    socket.on('timeout', () => {
      // Only a connection with no request in progress: a handler may work for long in silence.
      if ((sockets.get(socket) ?? 0) === 0) cut(socket, 'idle');
    });
    socket.once('close', () => {
      sockets.delete(socket);
      fresh.delete(socket);
      const n = (perAddress.get(address) ?? 1) - 1;
      if (n <= 0) perAddress.delete(address);
      else perAddress.set(address, n);
    });
  });
  // Node destroys a socket on its timeout unless someone listens: the listener above decides.
  server.on('timeout', () => undefined);
  // A slow or silent peer must not hold a socket forever.
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveMs;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const target = req.url ?? '/';
    const nonce = typeof req.headers[HEADER.nonce] === 'string' ? (req.headers[HEADER.nonce] as string) : '';
    const caller = typeof req.headers[HEADER.keyId] === 'string' ? (req.headers[HEADER.keyId] as string) : '';
    let routeLabel = 'unmatched';

    const send = (status: number, body: unknown): void => {
      const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string | number> = {
        ...authenticator.signResponse({ status, audience: caller, requestNonce: nonce, contentSha256: sha256Hex(payload) }),
        'content-length': payload.length,
      };
      if (payload.length > 0) headers['content-type'] = 'application/json';
      res.writeHead(status, headers);
      res.end(payload);
      served.inc({ api: name, method, route: routeLabel, status: String(status) });
    };
    const refuse = (status: number, reason: RefusalReason, message: string): void => {
      refused.inc({ api: name, reason });
      const { write, suppressed } = refusalLog.take();
      if (write) {
        logger.warn(
          { remote: req.socket.remoteAddress, method, url: target, peer: caller || undefined, reason, ...(suppressed ? { suppressed } : {}) },
          `API request refused: ${message}${suppressed ? ` (${suppressed} refusals not logged before this one)` : ''}`,
        );
      }
      // The body of a refused request is never read; close the connection rather than drain it.
      res.setHeader('connection', 'close');
      send(status, { error: message });
    };

    if (method === 'GET' && target === IDENTITY_PATH) return send(200, { identity: authenticator.identity, api: name });

    const verdict = authenticator.verify(method, target, req.headers);
    if (!verdict.ok) return refuse(verdict.status, verdict.reason, verdict.message);
    const { peer, role } = verdict;
    skew.set({ api: name, peer }, verdict.skewMs / 1000);

    const url = new URL(target, 'http://api');
    let parts: string[];
    try {
      parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    } catch {
      return send(400, { error: `malformed path ${url.pathname}` });
    }
    let found: { route: Route; params: Record<string, string>; roles: ReadonlySet<Role> } | undefined;
    const allowed: string[] = [];
    for (const c of routes) {
      const params = match(c.segments, parts);
      if (!params) continue;
      if (c.route.method === method) {
        found = { route: c.route, params, roles: c.roles };
        break;
      }
      allowed.push(c.route.method);
    }
    if (!found) {
      if (allowed.length > 0) {
        res.setHeader('allow', allowed.join(', '));
        return send(405, { error: `${method} not allowed on ${url.pathname} (allowed: ${allowed.join(', ')})` });
      }
      return send(404, { error: `no route ${method} ${url.pathname}` });
    }
    const { route, params } = found;
    routeLabel = route.path;
    if (!found.roles.has(role)) {
      forbidden.inc({ api: name, method, route: route.path, role });
      return refuse(403, 'forbidden', `${peer} (role ${role}) may not call ${method} ${route.path} (roles: ${[...found.roles].join(', ')})`);
    }

    const query: Record<string, string> = Object.fromEntries(url.searchParams);
    let parsedQuery: unknown = query;
    if (route.query) {
      const r = route.query.safeParse(query);
      if (!r.success) {
        const issue = issueAt(r.error.issues[0]!);
        return send(400, { error: issue.message, field: `query.${fieldPath(issue.path)}`.replace(/\.$/, '') });
      }
      parsedQuery = r.data;
    }

    let body: unknown;
    if (route.rawBody) {
      if (verdict.contentSha256 !== STREAMING) return send(400, { error: `${route.path} takes a streamed body (${HEADER.contentSha256}: ${STREAMING})` });
      const key = authenticator.credentials.peers.get(peer)!;
      const verifier = new FrameVerifier(key, Buffer.from(verdict.signature, 'base64'), peer);
      req.pipe(verifier);
      req.on('error', (err) => verifier.destroy(err));
      body = verifier;
    } else {
      if (verdict.contentSha256 === STREAMING) return send(400, { error: `${route.path} takes a JSON body, not a stream` });
      let raw: Buffer;
      try {
        raw = await readBody(req, maxBodyBytes);
      } catch (err) {
        if (err instanceof BodyTooLarge) {
          res.setHeader('connection', 'close');
          return send(413, { error: `body larger than ${maxBodyBytes} bytes` });
        }
        throw err;
      }
      if (!Authenticator.checkDigest(verdict.contentSha256, raw)) {
        return refuse(401, 'bad_digest', 'body does not match its signed digest');
      }
      if (route.body) {
        let json: unknown;
        try {
          json = raw.length === 0 ? undefined : JSON.parse(raw.toString('utf8'));
        } catch (err) {
          return send(400, { error: `malformed JSON body: ${(err as Error).message}` });
        }
        const r = route.body.safeParse(json);
        if (!r.success) {
          const issue = issueAt(r.error.issues[0]!);
          return send(400, { error: issue.message, field: fieldPath(issue.path) });
        }
        body = r.data;
      }
    }

    const aborter = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) aborter.abort(new Error('peer went away'));
    });
    const ctx: RequestContext = {
      params,
      body,
      query: parsedQuery,
      peer,
      role,
      req,
      res,
      signal: aborter.signal,
      async stream(source, opts = {}) {
        const status = opts.status ?? 200;
        const signed = authenticator.signResponse({ status, audience: peer, requestNonce: nonce, contentSha256: STREAMING });
        res.writeHead(status, { ...signed, 'content-type': opts.contentType ?? 'application/octet-stream' });
        served.inc({ api: name, method, route: routeLabel, status: String(status) });
        const key = authenticator.credentials.privateKey;
        await pipeline(source instanceof Readable ? source : Readable.from(source), new FrameSigner(key, Buffer.from(signed[HEADER.signature]!, 'base64')), res, {
          signal: aborter.signal,
        });
        return STREAMED;
      },
    };

    let result: HandlerResult;
    try {
      result = await route.handler(ctx);
    } catch (err) {
      if (res.headersSent) throw err;
      if (err instanceof HttpError) return send(err.status, err.field === undefined ? { error: err.message } : { error: err.message, field: err.field });
      logger.error({ err, method, route: route.path, peer }, 'API handler failed');
      return send(500, { error: err instanceof Error ? err.message : String(err) });
    }
    if (result === STREAMED) return;
    if (res.headersSent) throw new Error(`handler of ${method} ${route.path} wrote its response without ctx.stream()`);
    if (result instanceof Reply) return send(result.status, result.body);
    if (result === undefined) return send(204, undefined);
    send(200, result);
  }

  return {
    listen(address) {
      return new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const done = () => {
          server.off('error', reject);
          resolve();
        };
        if (typeof address === 'string') {
          const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address);
          if (!m) return reject(new Error(`listen address '${address}' is not host:port`));
          server.listen(Number(m[3]), m[1] ?? (m[2] || undefined), done);
        } else if ('path' in address) server.listen(address.path, done);
        else server.listen(address.port, address.host, done);
      });
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        for (const socket of sockets.keys()) socket.destroy();
      });
    },
    get address() {
      return server.address();
    },
    get url() {
      const a = server.address();
      if (a === null) throw new Error(`API ${name} is not listening`);
      if (typeof a === 'string') return `unix:${a}`;
      return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    },
  };
}
