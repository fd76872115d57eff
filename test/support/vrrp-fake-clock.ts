import type { Clock, TimerHandle } from '../../src/vrrp/state-machine.js';

/** A manual clock: time moves only when a test advances it, firing due timers in order. */
export class FakeClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: { at: number; seq: number; fire: () => void; live: boolean }[] = [];

  now(): number {
    return this.t;
  }

  setTimer(ms: number, fire: () => void): TimerHandle {
    const timer = { at: this.t + ms, seq: this.seq++, fire, live: true };
    this.timers.push(timer);
    return { cancel: () => void (timer.live = false) };
  }

  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers = this.timers.filter((x) => x.live);
      const next = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.t = next.at;
      next.live = false;
      next.fire();
    }
    this.t = end;
  }
}
