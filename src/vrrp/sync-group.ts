/**
 * A sync group (keepalived's vrrp_sync_group): instances that change state together, such as
 * a VIP on the external interface and its inside address on the internal one, so that the
 * appliance holding one also holds the other.
 */
import type { VirtualRouter, VrrpState } from './state-machine.js';

export class SyncGroup {
  /** Set while the group is moving its members, so their own transitions do not echo back. */
  private moving = false;

  constructor(
    readonly name: string,
    readonly members: ReadonlyMap<string, VirtualRouter>,
  ) {}

  /** Called on every member's transition: carry the other members along. */
  memberChanged(memberName: string, from: VrrpState, to: VrrpState): void {
    if (this.moving) return;
    this.moving = true;
    try {
      for (const [name, router] of this.members) {
        if (name === memberName) continue;
        if (to === 'master') router.followMaster(`sync group ${this.name}: ${memberName} became master`);
        else if (from === 'master' && to === 'backup') router.followBackup(`sync group ${this.name}: ${memberName} left master`);
        else if (to === 'fault') router.followBackup(`sync group ${this.name}: ${memberName} in fault`);
      }
    } finally {
      this.moving = false;
    }
  }

  release(): void {
    this.all((r) => r.release());
  }

  claim(): void {
    this.all((r) => r.claim());
  }

  /** A group is master when all its members are; anything else is reported member by member. */
  get state(): VrrpState | 'mixed' {
    const states = new Set([...this.members.values()].map((r) => r.state));
    return states.size === 1 ? ([...states][0] as VrrpState) : 'mixed';
  }

  private all(fn: (r: VirtualRouter) => void): void {
    this.moving = true;
    try {
      for (const router of this.members.values()) fn(router);
    } finally {
      this.moving = false;
    }
  }
}
