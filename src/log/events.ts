/**
 * The events an operator's scripts react to, as keepalived's notify scripts do: a VRRP instance
 * became master, backup or fault; a backend went up or down; a migration finished or was
 * aborted; a VIP was taken over from the keepers' copies. One bus per process: the parts emit
 * into it (they are given an EventSink), the hooks (src/appliance/hooks.ts) run the configured
 * programs, and `vipshift events --follow` reads the same events as JSON lines.
 */

/** The event kinds, named as the configuration's `notify` keys (src/config/hooks.ts). */
export const EVENT_KINDS = ['master', 'backup', 'fault', 'backendUp', 'backendDown', 'migrationDone', 'migrationAborted', 'takeover'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

export interface VipshiftEvent {
  event: EventKind;
  /** ISO 8601, set by the bus. */
  time: string;
  /** The process's member: lb1, ctl... */
  member: string;
  /** VRRP instance (master, backup, fault). */
  instance?: string;
  vip?: string;
  /** A backend's address (backendUp, backendDown). */
  backend?: string;
  migration?: string;
  /** Why, in a few words (the VRRP reason, the abort's cause). */
  reason?: string;
}

export type EventInput = Omit<VipshiftEvent, 'time' | 'member'>;

/** What a part needs to report an event: nothing more (a fake in unit tests records them). */
export interface EventSink {
  emit(event: EventInput): void;
}

export type EventListener = (event: VipshiftEvent) => void;

/** The process's events: delivered to every listener, the last `keep` remembered for a late reader. */
export class EventBus implements EventSink {
  private readonly listeners = new Set<EventListener>();
  private readonly recentEvents: VipshiftEvent[] = [];

  constructor(
    readonly member: string,
    private readonly keep = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  emit(input: EventInput): void {
    const event: VipshiftEvent = { ...input, time: new Date(this.now()).toISOString(), member: this.member };
    this.recentEvents.push(event);
    if (this.recentEvents.length > this.keep) this.recentEvents.shift();
    // A listener that throws must not keep the others (or the emitting part) from their work.
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // the listener's own error: it logs it
      }
    }
  }

  /** Calls `listener` for every event from now on; returns the unsubscribe. */
  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The remembered events, oldest first. */
  recent(): VipshiftEvent[] {
    return [...this.recentEvents];
  }
}
