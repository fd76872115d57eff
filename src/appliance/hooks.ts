/**
 * Runs the configured notify hooks (src/config/hooks.ts) on the process's events
 * (src/log/events.ts): one program at a time, in the order of the events (a `backup` never
 * overtakes the `master` before it), each without a shell and killed at its timeout. A hook
 * that fails or times out is logged and counted; it never stops the appliance. Events beyond
 * a bounded queue (a hook that hangs while VRRP flaps) are dropped and counted.
 */
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { serve } from '../api/contract.js';
import type { Route } from '../api/server.js';
import { agentApi } from './agent-api.js';
import type { NotifyConfig } from '../config/hooks.js';
import type { EventBus, VipshiftEvent } from '../log/events.js';

export type HookResult = 'ok' | 'failed' | 'timeout' | 'dropped';

/** Events waiting for their hook, at most. */
export const HOOK_QUEUE = 256;
const OUTPUT_BYTES = 2048;

/** The environment a hook sees: the event, and a fixed PATH (not the appliance's). */
export function hookEnvironment(event: VipshiftEvent): Record<string, string> {
  const env: Record<string, string> = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', VIPSHIFT_EVENT_JSON: JSON.stringify(event) };
  for (const [key, value] of Object.entries(event)) {
    if (value !== undefined) env[`VIPSHIFT_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`] = String(value);
  }
  return env;
}

export class Hooks {
  private queue: VipshiftEvent[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private readonly runs: Counter<string> | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly config: NotifyConfig,
    private readonly logger: Logger,
    metrics?: Registry,
  ) {
    if (metrics) {
      this.runs =
        (metrics.getSingleMetric('vipshift_hook_runs_total') as Counter<string> | undefined) ??
        new Counter({ name: 'vipshift_hook_runs_total', help: 'Notify hooks run, by event and result (ok, failed, timeout, dropped).', labelNames: ['event', 'result'], registers: [metrics] });
    }
  }

  /** Runs the hooks of the bus's events from now on. */
  attach(bus: EventBus): void {
    this.unsubscribe = bus.subscribe((event) => this.enqueue(event));
  }

  detach(): void {
    this.unsubscribe?.();
  }

  enqueue(event: VipshiftEvent): void {
    if (!this.config[event.event]) return;
    if (this.queue.length >= HOOK_QUEUE) {
      this.runs?.inc({ event: event.event, result: 'dropped' });
      this.logger.warn({ event: event.event }, `notify hook queue full (${HOOK_QUEUE}): event dropped`);
      return;
    }
    this.queue.push(event);
    if (!this.running) void this.drain();
  }

  /** Resolves when every queued hook has run (tests, and a clean stop). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    for (let event = this.queue.shift(); event; event = this.queue.shift()) {
      const result = await this.run(event);
      this.runs?.inc({ event: event.event, result });
    }
    this.running = false;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private run(event: VipshiftEvent): Promise<HookResult> {
    const argv = this.config[event.event]!;
    const timeoutMs = this.config.timeoutSeconds * 1000;
    const t0 = performance.now();
    return new Promise<HookResult>((resolve) => {
      let output = '';
      const keep = (chunk: Buffer) => {
        if (output.length < OUTPUT_BYTES) output += chunk.toString('utf8').slice(0, OUTPUT_BYTES - output.length);
      };
      let timedOut = false;
      // A process group of its own: the timeout kills what the program started too (a script's
      // `sleep` would otherwise hold its output open and the hook would never end).
      const child = spawn(argv[0]!, argv.slice(1), { env: hookEnvironment(event), stdio: ['ignore', 'pipe', 'pipe'], shell: false, detached: true });
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, timeoutMs);
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      let finished = false;
      const finish = (result: HookResult, detail: Record<string, unknown>) => {
        // A program that cannot start reports 'error' and then 'close': one result.
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        const ms = Math.round(performance.now() - t0);
        const fields = { event: event.event, vip: event.vip, instance: event.instance, hook: argv[0], ms, ...detail, ...(output ? { output: output.trimEnd() } : {}) };
        if (result === 'ok') this.logger.info(fields, 'notify hook ran');
        else this.logger.warn(fields, `notify hook ${result === 'timeout' ? `killed after its timeout of ${this.config.timeoutSeconds} s` : 'failed'}`);
        resolve(result);
      };
      child.once('error', (err) => finish('failed', { err: err.message }));
      child.once('close', (code, signal) => {
        if (timedOut) finish('timeout', { signal });
        else if (code === 0) finish('ok', {});
        else finish('failed', { code, signal });
      });
    });
  }
}

/**
 * `GET /v1/events[?follow=true]`: the remembered events as JSON lines, oldest first; with
 * follow, every later event too, until the caller goes away (`vipshift events --follow`).
 */
export function eventsRoute(bus: EventBus): Route {
  return serve(agentApi.events, (ctx) => {
    const out = new PassThrough();
    const line = (e: VipshiftEvent) => out.write(`${JSON.stringify(e)}\n`);
    for (const e of bus.recent()) line(e);
    if (ctx.query.follow === 'true') {
      const unsubscribe = bus.subscribe(line);
      ctx.signal.addEventListener('abort', () => {
        unsubscribe();
        out.end();
      });
    } else out.end();
    return ctx.stream(out, { contentType: 'application/x-ndjson' });
  });
}
