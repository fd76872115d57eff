/**
 * The traffic generator tells apart what a migration must avoid: refused connections,
 * resets, corrupted echoes, and pauses (the longest gap). Each case is provoked for real in
 * a lab. Needs root and a build (dist/cli.js).
 */
import { describe, expect, it } from 'vitest';
import { run } from '../../src/lab/netns.js';
import { startTraffic } from '../../src/lab/traffic.js';
import { withLab } from '../helpers/lab.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NO_ERRORS = { connect: 0, reset: 0, timeout: 0, mismatch: 0, closed: 0, other: 0 };

describe('lab traffic', () => {
  it('counts refusals, corruption, resets and pauses', async () => {
    await withLab({ prefix: 'vtlab' }, async (lab) => {
      const lb1 = lab.ns('lb1');

      // Nothing listens on port 9: every connection is refused.
      const refused = await startTraffic(lb1, { address: '198.18.0.101', port: 9, connections: 5, intervalMs: 20, durationMs: 300 }).done;
      expect(refused.errors).toEqual({ ...NO_ERRORS, connect: 5 });
      expect(refused.errorCodes).toEqual({ ECONNREFUSED: 5 });

      // The HTTP server does not echo: it answers 400 and closes.
      const http = await startTraffic(lb1, { address: '198.18.0.101', port: 80, connections: 3, intervalMs: 20, durationMs: 500 }).done;
      expect(http.errors.mismatch).toBe(3);
      expect(http.connections.ok).toBe(0);

      // A pause: srv1's port on the inside bridge goes down for 700 ms, then TCP retransmits.
      const paused = startTraffic(lb1, { address: '198.18.0.101', port: 7, connections: 10, intervalMs: 20, perConnection: true });
      expect((await paused.established).established).toBe(10);
      await sleep(300);
      const port = ['-n', lab.ns('sw'), 'link', 'set', 'srv1-int'];
      expect((await run('ip', [...port, 'down'])).code).toBe(0);
      await sleep(700);
      expect((await run('ip', [...port, 'up'])).code).toBe(0);
      await sleep(2000);
      const p = await paused.stop();
      expect(p.errors).toEqual(NO_ERRORS);
      expect(p.messages.echoed).toBe(p.messages.sent);
      expect(p.gapMs.max).toBeGreaterThanOrEqual(700);
      for (const c of p.perConnection!) {
        expect(c.longestGapMs).toBeGreaterThanOrEqual(600);
        expect(c.localPort).toBeGreaterThan(0);
      }

      // A server that dies: its connections end (reset, or FIN when nothing was unread).
      const dying = startTraffic(lb1, { address: '198.18.0.102', port: 7, connections: 10, intervalMs: 10, durationMs: 1500 });
      await dying.established;
      const srv2 = lab.info.processes.find((x) => x.name === 'srv2-service')!;
      process.kill(srv2.pid, 'SIGKILL');
      const d = await dying.done;
      expect(d.connections.failed).toBe(10);
      expect(d.errors.reset + d.errors.closed).toBe(10);
      expect(d.errors.mismatch + d.errors.timeout).toBe(0);
    });
  });
});
