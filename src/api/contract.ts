/**
 * An API's routes declared once, as data both sides use: the method, the path with its
 * `:parameters`, and zod schemas for the body, the query and the answer. The server builds
 * its Route from an endpoint and a handler (`serve`); a client calls an endpoint (`call`)
 * and gets the answer parsed by the endpoint's schema, never cast. A streamed answer has no
 * JSON schema: `open` returns the verified byte stream.
 */
import type { Readable } from 'node:stream';
import { z, type ZodType } from 'zod';
import type { ApiClient, RequestOptions } from './client.js';
import type { Role } from './auth.js';
import { routeKey, type HandlerResult, type Method, type RequestContext, type Route, type RouteRoles } from './server.js';

export interface Endpoint<B = unknown, Q = unknown, R = unknown> {
  method: Method;
  /** Segments starting with ':' are parameters: '/v1/vips/:name/prepare'. */
  path: string;
  body?: ZodType<B>;
  query?: ZodType<Q>;
  /** The JSON answer's schema; absent for a streamed answer. */
  response?: ZodType<R>;
  /** The roles of the members who may call it (peers.json); others get 403. */
  roles: readonly Role[];
}

/** An endpoint's types, inferred from its declaration. */
export function endpoint<B = undefined, Q = undefined, R = unknown>(e: Endpoint<B, Q, R>): Endpoint<B, Q, R> {
  return e;
}

/** An API's route table (server.ts's RouteRoles) from its endpoints' declarations. */
export function rolesOf(api: Readonly<Record<string, Endpoint<any, any, any>>>): RouteRoles {
  return Object.fromEntries(Object.values(api).map((e) => [routeKey(e), e.roles]));
}

/** The empty JSON object most step endpoints take. */
export const noBody = z.object({}).strict();
/** `{ ok: true }`, the answer of a step that has nothing else to say. */
export const okAnswer = z.object({ ok: z.literal(true) });

/** The path with its parameters filled in (each URI-encoded). */
export function pathOf(e: Pick<Endpoint, 'path'>, params: Record<string, string> = {}): string {
  return e.path.replace(/:([A-Za-z]+)/g, (_, key: string) => {
    const value = params[key];
    if (value === undefined) throw new Error(`${e.path}: parameter '${key}' missing`);
    return encodeURIComponent(value);
  });
}

function withQuery(path: string, query: unknown): string {
  if (query === undefined) return path;
  const entries = Object.entries(query as Record<string, unknown>).filter(([, v]) => v !== undefined);
  return entries.length === 0 ? path : `${path}?${new URLSearchParams(entries.map(([k, v]): [string, string] => [k, String(v)]))}`;
}

/** What a client needs to call endpoints: an ApiClient, or anything that speaks for one (a client following a leader). */
export type JsonApi = Pick<ApiClient, 'get' | 'post' | 'put' | 'delete'>;

export interface CallArgs<B, Q> {
  params?: Record<string, string>;
  body?: B;
  query?: Partial<Q>;
}

/** Calls a JSON endpoint; the answer is parsed by the endpoint's schema (a wrong one throws). */
export async function call<B, Q, R>(api: JsonApi, e: Endpoint<B, Q, R>, args: CallArgs<B, Q> = {}, options?: RequestOptions): Promise<R> {
  if (!e.response) throw new Error(`${e.method} ${e.path} answers with a stream: use open()`);
  const path = withQuery(pathOf(e, args.params), args.query);
  const body = args.body ?? (e.method === 'GET' ? undefined : {});
  const answer: unknown =
    e.method === 'GET' ? await api.get(path, options) : e.method === 'POST' ? await api.post(path, body, options) : e.method === 'PUT' ? await api.put(path, body, options) : await api.delete(path, body, options);
  const parsed = e.response.safeParse(answer);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${e.method} ${path}: unexpected answer${issue ? ` at '${issue.path.join('.')}': ${issue.message}` : ''}`);
  }
  return parsed.data;
}

/** Calls an endpoint that answers with a stream (binary records, or JSON lines). */
export function open<B, Q>(api: Pick<ApiClient, 'stream'>, e: Endpoint<B, Q, unknown>, args: CallArgs<B, Q> = {}, options?: RequestOptions): Promise<Readable> {
  return api.stream(e.method, withQuery(pathOf(e, args.params), args.query), e.method === 'GET' ? undefined : (args.body ?? {}), options);
}

type Handler<B, Q, R> = (ctx: RequestContext<B, Q>) => R | Promise<R> | HandlerResult | Promise<HandlerResult>;

/** The server's Route for an endpoint. */
export function serve<B, Q, R>(e: Endpoint<B, Q, R>, handler: Handler<B, Q, R>, extra: Pick<Route, 'rawBody'> = {}): Route<B, Q> {
  return {
    method: e.method,
    path: e.path,
    ...(e.body ? { body: e.body } : {}),
    ...(e.query ? { query: e.query } : {}),
    ...extra,
    handler: handler as Route<B, Q>['handler'],
  };
}
