/**
 * The backends test's servers and clients, run inside a namespace.
 *   server PORT...   every address of the namespace: on each connection says
 *                    `hello <local address>:<local port> <peer address>`, then echoes lines.
 *   client           JSON requests on stdin, { id, op, args }:
 *     load { host, port, every, hold, count }  opens `count` connections, one each
 *         `every` ms; each sends a line every 50 ms for `hold` ms and closes; answers with each
 *         connection's backend and fate (ok, or the error that ended it).
 *     open { conn, host, port } / ping { conn } / close { conn }
 *         a long-lived connection: open answers with its backend; ping answers ok or the error.
 *     probe { host, port, sources }  one connection per source address: its backend.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';

const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const [role, ...rest] = process.argv.slice(2);

if (role === 'server') {
  for (const port of rest.map(Number)) {
    net
      .createServer((sock) => {
        sock.setNoDelay(true);
        sock.on('error', () => undefined);
        sock.write(`hello ${sock.localAddress}:${sock.localPort} ${sock.remoteAddress}\n`);
        createInterface({ input: sock }).on('error', () => undefined).on('line', (line) => sock.write(`${line}\n`));
      })
      .listen(port, '0.0.0.0', () => say({ event: 'listening', port }));
  }
} else {
  /** A connection that says hello, then answers each line; its fate is its first error. */
  class Conn {
    readonly sock: net.Socket;
    backend: string | undefined;
    /** The address the server saw the connection come from. */
    peer: string | undefined;
    error: string | undefined;
    private waiting: ((line: string | Error) => void)[] = [];
    readonly hello: Promise<string>;

    constructor(host: string, port: number, localAddress?: string) {
      this.sock = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
      this.sock.setNoDelay(true);
      this.sock.setTimeout(5000, () => this.sock.destroy(new Error('ETIMEDOUT')));
      const lines = createInterface({ input: this.sock });
      lines.on('error', () => undefined);
      lines.on('line', (line) => this.waiting.shift()?.(line));
      this.sock.on('error', (e: NodeJS.ErrnoException) => {
        this.error ??= e.code ?? e.message;
        for (const w of this.waiting.splice(0)) w(e);
      });
      this.sock.on('close', () => {
        this.error ??= 'closed';
        for (const w of this.waiting.splice(0)) w(new Error('closed'));
      });
      this.hello = this.next().then((line) => {
        [, this.backend, this.peer] = line.split(' ');
        return this.backend!;
      });
    }

    next(): Promise<string> {
      return new Promise((resolve, reject) => this.waiting.push((l) => (l instanceof Error ? reject(l) : resolve(l))));
    }

    async ping(text: string): Promise<void> {
      const answer = this.next();
      this.sock.write(`${text}\n`);
      if ((await answer) !== text) throw new Error(`mismatch on ${text}`);
    }
  }

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const conns = new Map<string, Conn>();

  const ops: Record<string, (r: any) => Promise<unknown>> = {
    async load({ host, port, every, hold, count }) {
      const runs: Promise<{ backend?: string; peer?: string; fate: string }>[] = [];
      for (let i = 0; i < count; i++) {
        runs.push(
          (async () => {
            const c = new Conn(host, port);
            try {
              await c.hello;
              const end = Date.now() + hold;
              for (let n = 0; Date.now() < end; n++) {
                await c.ping(`p${n}`);
                await sleep(50);
              }
              c.sock.end();
              return { backend: c.backend!, peer: c.peer!, fate: 'ok' };
            } catch {
              c.sock.destroy();
              return { ...(c.backend ? { backend: c.backend } : {}), fate: c.error ?? 'failed' };
            }
          })(),
        );
        await sleep(every);
      }
      return Promise.all(runs);
    },
    async open({ conn, host, port }) {
      const c = new Conn(host, port);
      conns.set(conn, c);
      return { backend: await c.hello, port: c.sock.localPort };
    },
    async ping({ conn }) {
      const c = conns.get(conn)!;
      try {
        await c.ping('ping');
        return { ok: true };
      } catch {
        return { ok: false, error: c.error };
      }
    },
    async close({ conn }) {
      conns.get(conn)?.sock.end();
      conns.delete(conn);
      return {};
    },
    async probe({ host, port, sources }) {
      const out: Record<string, string> = {};
      await Promise.all(
        (sources as string[]).map(async (source) => {
          const c = new Conn(host, port, source);
          try {
            out[source] = await c.hello;
          } catch {
            out[source] = `failed: ${c.error}`;
          }
          c.sock.end();
        }),
      );
      return out;
    },
  };

  createInterface({ input: process.stdin }).on('line', (line) => {
    const req = JSON.parse(line) as { id: number; op: string; args: unknown };
    ops[req.op]!(req.args).then(
      (result) => say({ id: req.id, ok: true, result }),
      (e: Error) => say({ id: req.id, ok: false, error: e.message }),
    );
  });
}
