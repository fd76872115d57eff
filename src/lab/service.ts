/**
 * The servers' service in the lab: TCP echo (RFC 862) and a small HTTP server that says which
 * server answered and which client address it saw — what tests check translation with
 * (dnat: the client's own address; fullnat: the VIP's inside address).
 */
import http from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';

export interface ServiceOptions {
  /** The server's name, reported in HTTP answers. */
  name: string;
  echoPort: number;
  httpPort: number;
  /** Listen address; all of the namespace's addresses by default. */
  host?: string;
  log: Logger;
}

/** What `GET /` (any path) answers, as JSON. */
export interface HttpAnswer {
  server: string;
  /** The peer of the TCP connection as the server saw it. */
  client: { address: string; port: number };
  /** The local end: which of the server's addresses was reached. */
  local: { address: string; port: number };
  method: string;
  path: string;
}

export interface Service {
  echo: net.Server;
  http: http.Server;
  close(): Promise<void>;
}

export async function startService(o: ServiceOptions): Promise<Service> {
  const host = o.host ?? '0.0.0.0';
  const echoSockets = new Set<net.Socket>();
  const echo = net.createServer({ allowHalfOpen: true }, (socket) => {
    echoSockets.add(socket);
    socket.setNoDelay(true);
    // Errors (resets by the peer, typically) end this connection, never the service.
    socket.on('error', (e) => o.log.debug({ err: e.message, peer: socket.remoteAddress }, 'echo connection error'));
    socket.on('close', () => echoSockets.delete(socket));
    socket.pipe(socket);
  });

  const web = http.createServer((req, res) => {
    const s = req.socket;
    const answer: HttpAnswer = {
      server: o.name,
      client: { address: plain(s.remoteAddress), port: s.remotePort ?? 0 },
      local: { address: plain(s.localAddress), port: s.localPort ?? 0 },
      method: req.method ?? '',
      path: req.url ?? '',
    };
    const body = JSON.stringify(answer) + '\n';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    req.resume();
  });
  web.keepAliveTimeout = 30_000;

  // Many clients connect at once in tests and benchmarks: a deep accept queue.
  await Promise.all([listen(echo, o.echoPort, host), listen(web, o.httpPort, host)]);
  o.log.info({ echoPort: o.echoPort, httpPort: o.httpPort, host }, 'service listening');

  return {
    echo,
    http: web,
    async close() {
      const open = echoSockets.size;
      for (const s of echoSockets) s.destroy();
      web.closeAllConnections();
      await Promise.all([new Promise((r) => echo.close(r)), new Promise((r) => web.close(r))]);
      o.log.info({ echoConnectionsClosed: open }, 'service closed');
    },
  };
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** `::ffff:a.b.c.d` → `a.b.c.d`. */
function plain(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}
