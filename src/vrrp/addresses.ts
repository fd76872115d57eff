/**
 * One instance's virtual addresses (keepalived's vrrp_ipaddress.c): added and removed through
 * rtnetlink in the order the state machine asks, then announced by gratuitous ARP, repeated
 * `garpRepeat` times `garpInterval` apart until the addresses are removed again.
 */
import type { Clock, TimerHandle } from './state-machine.js';

/** Adds and removes addresses on interfaces (src/netlink/route.ts `Addresses`). */
export interface AddressTable {
  add(ifname: string, cidr: string): Promise<unknown>;
  remove(ifname: string, cidr: string): Promise<unknown>;
}

export interface VirtualAddress {
  /** As configured, with prefix: 203.0.113.10/24. */
  cidr: string;
  /** Without prefix, as advertised and announced. */
  address: string;
  /** The interface it goes on (keepalived's `dev`, default the instance's interface). */
  ifname: string;
}

export interface VirtualAddressHooks {
  /** After an add or remove of all the addresses; failures name the address. */
  changed(change: 'added' | 'removed', failures: { cidr: string; error: string }[]): void;
  /** Send one gratuitous ARP for the address; false if it could not be sent. */
  announce(v: VirtualAddress): boolean;
}

export class VirtualAddresses {
  private work: Promise<void> = Promise.resolve();
  private garpTimers: TimerHandle[] = [];
  /** Bumped by remove(): a gARP burst queued before it must not go out after it. */
  private generation = 0;

  constructor(
    readonly list: VirtualAddress[],
    private readonly table: AddressTable,
    private readonly clock: Clock,
    private readonly hooks: VirtualAddressHooks,
    private readonly garp: { repeat: number; intervalMs: number },
  ) {}

  add(): void {
    this.queue('added', (v) => this.table.add(v.ifname, v.cidr));
  }

  remove(): void {
    this.generation++;
    this.garpTimers.forEach((t) => t.cancel());
    this.garpTimers = [];
    this.queue('removed', (v) => this.table.remove(v.ifname, v.cidr));
  }

  /** Gratuitous ARPs once the changes asked for so far are done. */
  announce(): void {
    const generation = this.generation;
    this.work = this.work.then(() => this.burst(generation, this.garp.repeat));
  }

  /** Resolves when every change asked for so far is done. */
  settled(): Promise<void> {
    return this.work;
  }

  private queue(change: 'added' | 'removed', op: (v: VirtualAddress) => Promise<unknown>): void {
    this.work = this.work.then(async () => {
      const results = await Promise.allSettled(this.list.map(op));
      const failures = results.flatMap((r, k) => (r.status === 'rejected' ? [{ cidr: this.list[k]?.cidr ?? '', error: String(r.reason) }] : []));
      this.hooks.changed(change, failures);
    });
  }

  private burst(generation: number, remaining: number): void {
    if (generation !== this.generation || remaining <= 0) return;
    for (const v of this.list) this.hooks.announce(v);
    if (remaining > 1) {
      const timer = this.clock.setTimer(this.garp.intervalMs, () => {
        this.garpTimers = this.garpTimers.filter((t) => t !== timer);
        this.burst(generation, remaining - 1);
      });
      this.garpTimers.push(timer);
    }
  }
}
