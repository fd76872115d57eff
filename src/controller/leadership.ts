/**
 * Who may act: one controller leads, the others follow. A sole controller (SQLite store) always
 * leads, without epochs. Controllers on etcd elect one (etcd-store.ts): the leader's epoch is
 * the revision at which it created the leader key, larger for every later leader, and goes
 * with every request it sends to an appliance, which refuses an epoch older than the newest it
 * has seen (src/appliance/agent.ts).
 */
export interface ControllerIdentity {
  name: string;
  /** Its API, for the operator's tools to follow a leader change. */
  api: string;
}

export interface Leadership {
  /** True while this controller leads and knows it still does (its lease has time left). */
  leading(): boolean;
  /** This controller's epoch while it leads; undefined for a sole controller or a follower. */
  epoch(): number | undefined;
  /** The leader as last seen (this controller or another), undefined during an election. */
  leader(): ControllerIdentity | undefined;
  /** Leader changes this controller has seen since it started. */
  readonly elections: number;
  /** Called when this controller starts or stops leading. */
  onChange(listener: (leading: boolean) => void): void;
}

/** A controller alone with its SQLite file: always the leader. */
export class SoleLeadership implements Leadership {
  readonly elections = 1;
  constructor(private readonly self: ControllerIdentity) {}
  leading(): boolean {
    return true;
  }
  epoch(): undefined {
    return undefined;
  }
  leader(): ControllerIdentity {
    return this.self;
  }
  onChange(): void {}
}

/** Refused because another controller leads (or none does yet): the operator's tools ask the leader. */
export class NotLeaderError extends Error {
  constructor(readonly leader: ControllerIdentity | undefined) {
    super(leader ? `not the leader: ${leader.name} leads (${leader.api})` : 'not the leader: no controller leads now (election under way, or etcd has no quorum)');
    this.name = 'NotLeaderError';
  }
}
