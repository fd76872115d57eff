/**
 * The metrics listener: what a stock Prometheus scrapes. Prometheus cannot sign our requests
 * (src/api/auth.ts), so every process also serves GET /metrics on a listener of its own,
 * behind a bearer token (Prometheus' `authorization: { credentials_file: ... }`): the
 * cluster's `metrics.token`, written with its keys by `vipshift pki init`. It serves nothing
 * else, reads no body, and keeps few connections; a wrong or missing token is 401, counted.
 * docs/metrics.md has the scrape configuration.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { safeEqual } from '../api/auth.js';

/** The `metrics` section of a process's configuration (src/config/metrics.ts). */
export interface MetricsListenerConfig {
  listen?: string | undefined;
  enabled: boolean;
}

export const METRICS_TOKEN_FILE = 'metrics.token';
const MIN_TOKEN = 32;

/** Writes a new random token (mode 0600) in the credentials directory; returns its path. */
export function createMetricsToken(dir: string): string {
  const path = join(dir, METRICS_TOKEN_FILE);
  writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

/** The token in `dir`, or undefined when there is none; throws when it is too short to be one. */
export function loadMetricsToken(dir: string): string | undefined {
  const path = join(dir, METRICS_TOKEN_FILE);
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
  if (token.length < MIN_TOKEN) throw new Error(`${path}: a metrics token has at least ${MIN_TOKEN} characters (vipshift pki init writes one)`);
  return token;
}

/** Where the listener listens: as configured, else the API's address with its port + 1000. */
export function metricsAddress(config: MetricsListenerConfig, apiListen: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(config.listen ?? apiListen);
  if (!m) throw new Error(`metrics: '${config.listen ?? apiListen}' is not address:port`);
  const port = config.listen ? Number(m[2]) : Number(m[2]) + 1000;
  if (port > 65535) throw new Error(`metrics: the default port (API port + 1000 = ${port}) is out of range: set metrics.listen`);
  return { host: m[1]!, port };
}

export interface MetricsListener {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts the listener when the configuration has it on and the credentials directory holds a
 * token; otherwise says why not (a warning) and returns undefined.
 */
export async function startMetricsListener(options: {
  config: MetricsListenerConfig;
  apiListen: string;
  credentialsDir: string;
  registry: Registry;
  logger: Logger;
  name: string;
}): Promise<MetricsListener | undefined> {
  const { config, registry, logger, name } = options;
  if (!config.enabled) {
    logger.warn('metrics listener off (metrics.enabled: false): Prometheus cannot scrape this process');
    return undefined;
  }
  const token = loadMetricsToken(options.credentialsDir);
  if (!token) {
    logger.warn({ dir: options.credentialsDir }, `no ${METRICS_TOKEN_FILE} in the credentials directory: metrics listener off (vipshift pki init writes one)`);
    return undefined;
  }
  const refused =
    (registry.getSingleMetric('vipshift_metrics_scrapes_refused_total') as Counter<string> | undefined) ??
    new Counter({ name: 'vipshift_metrics_scrapes_refused_total', help: 'Requests to the metrics listener refused (no or wrong bearer token, other paths).', labelNames: ['listener'], registers: [registry] });
  const expected = `Bearer ${token}`;
  const server: Server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const auth = req.headers.authorization ?? '';
    if (!safeEqual(auth, expected)) {
      refused.inc({ listener: name });
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="vipshift metrics"', 'content-type': 'text/plain', connection: 'close' });
      return res.end('a bearer token is required (the cluster\'s metrics.token)\n');
    }
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('only GET /metrics here\n');
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`${err.message}\n`);
      },
    );
  });
  // A scraper opens a connection or two: a crowd of them is not one.
  server.maxConnections = 64;
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  server.timeout = 30_000;
  const { host, port } = metricsAddress(config, options.apiListen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`;
  logger.info({ metrics: url }, 'metrics listener ready (bearer token)');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
