/**
 * A TCP server or client for the integration tests, run inside a namespace.
 *   server PORT...: on each connection says `hello <peer address>`, then answers each line:
 *                   `delay <ms> <text>` → <text> after ms, anything else → echoed.
 *                   Reports {event:'accept', peer} and {event:'line', text} on stdout.
 *   client:         JSON requests on stdin ({ op:'connect', conn, host, port } | { op:'send', conn, text }),
 *                   reports {event:'connect'|'data'|'error'|'close', conn, ...} on stdout.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';

const report = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const [role, ...rest] = process.argv.slice(2);

if (role === 'server') {
  for (const port of rest.map(Number)) {
    net
      .createServer((sock) => {
        report({ event: 'accept', peer: sock.remoteAddress, port });
        sock.setNoDelay(true);
        sock.write(`hello ${sock.remoteAddress}\n`);
        createInterface({ input: sock }).on('error', () => undefined).on('line', (line) => {
          report({ event: 'line', text: line });
          const m = /^delay (\d+) (.*)$/.exec(line);
          if (m) setTimeout(() => sock.write(`${m[2]}\n`), Number(m[1]));
          else sock.write(`${line}\n`);
        });
        sock.on('error', () => undefined);
      })
      .listen(port, '0.0.0.0', () => report({ event: 'listening', port }));
  }
} else {
  const conns = new Map<string, net.Socket>();
  createInterface({ input: process.stdin }).on('line', (line) => {
    const req = JSON.parse(line) as { op: string; conn: string; host?: string; port?: number; text?: string };
    if (req.op === 'connect') {
      const sock = net.connect({ host: req.host!, port: req.port! });
      sock.setNoDelay(true);
      conns.set(req.conn, sock);
      sock.on('connect', () => report({ event: 'connect', conn: req.conn, localPort: sock.localPort }));
      createInterface({ input: sock })
        .on('line', (text) => report({ event: 'data', conn: req.conn, text }))
        .on('error', () => undefined); // the socket's own 'error' reports it
      sock.on('error', (e: NodeJS.ErrnoException) => report({ event: 'error', conn: req.conn, code: e.code }));
      sock.on('close', () => report({ event: 'close', conn: req.conn }));
    } else if (req.op === 'send') {
      conns.get(req.conn)?.write(`${req.text}\n`);
    }
  });
}
