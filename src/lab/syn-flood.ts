/**
 * A SYN flood inside the lab (the one user of Debian's hping3): spoofed SYNs from a few
 * addresses of the client's own documentation range, never anything outside the lab's
 * namespaces. Each source is one hping3 process; `ratePerSource` 0 means as fast as it goes.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface SynFloodOptions {
  /** The client's namespace. */
  namespace: string;
  address: string;
  port: number;
  /** Spoofed source addresses (documentation ranges only). */
  sources: string[];
  /** SYNs a second per source; 0: --flood. */
  ratePerSource: number;
}

export interface SynFloodRun {
  /** Stops every sender; resolves with the SYNs they report sent. */
  stop(): Promise<{ sent: number }>;
}

const DOCUMENTATION = [/^192\.0\.2\./, /^198\.51\.100\./, /^203\.0\.113\./, /^198\.1[89]\./];

export function startSynFlood(o: SynFloodOptions): SynFloodRun {
  for (const s of o.sources) if (!DOCUMENTATION.some((r) => r.test(s))) throw new Error(`spoofed source ${s} is outside the documentation ranges`);
  const pace = o.ratePerSource > 0 ? ['-i', `u${Math.max(1, Math.round(1_000_000 / o.ratePerSource))}`] : ['--flood'];
  const children: { child: ChildProcess; out: string[] }[] = o.sources.map((source) => {
    const child = spawn('ip', ['netns', 'exec', o.namespace, 'hping3', '-q', '-S', '-p', String(o.port), '-a', source, ...pace, o.address], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b.toString()));
    child.stderr!.on('data', (b: Buffer) => out.push(b.toString()));
    return { child, out };
  });
  return {
    async stop() {
      let sent = 0;
      await Promise.all(
        children.map(
          ({ child, out }) =>
            new Promise<void>((resolve) => {
              child.once('close', () => {
                // hping3 prints "N packets transmitted" when interrupted.
                sent += Number(/(\d+) packets transmitted/.exec(out.join(''))?.[1] ?? 0);
                resolve();
              });
              child.kill('SIGINT');
            }),
        ),
      );
      return { sent };
    },
  };
}
