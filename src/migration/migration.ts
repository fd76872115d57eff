/**
 * The patent's four-step migration of one VIP from appliance A (source) to B (target),
 * top to bottom. The controller runs it; the appliances do the work through their
 * agents. Every step is timed, reported, bounded by a timeout, and a failure at any
 * step aborts and gives the VIP back to the source with its connections alive.
 *
 * Before step 1 a pre-copy (as a virtual machine's live migration does it) creates the
 * VIP's entries on the target from the source's mirror while the source keeps forwarding;
 * the source's mirror journals every change from that snapshot on, and step 3 moves only
 * that difference. The hold then lasts about steps 2 and 4 plus the difference, whatever
 * the table's size. A source that cannot vouch for its difference makes step 3 copy the
 * whole table, as without a pre-copy.
 */

export const STEPS = ['prepare', 'move_address', 'move_entries', 'activate'] as const;
export type Step = (typeof STEPS)[number];
/** What each step does, in a few words (the console's list, logs). */
export const STEP_TITLES: Record<Step, string> = {
  prepare: 'prepare (target holds)',
  move_address: 'move the address',
  move_entries: 'move the entries',
  activate: 'activate, release held',
};
/** The phases the journal records: the pre-copy, then the patent's four steps. */
export const PHASES = ['precopy', ...STEPS] as const;
export type Phase = (typeof PHASES)[number];

/** What the migration needs from an appliance's agent (src/controller/agent-client.ts implements it over the agent API). */
export interface MigrationAgent {
  readonly name: string;
  /** Step 1 on the target: the VIP enters the mode table as `migrating` (held). */
  prepare(vip: string): Promise<void>;
  /** Step 2 on the source: it gives up the VIP's addresses. */
  releaseAddress(vip: string): Promise<void>;
  /** The addresses taken and announced: the source's, when a migration rolls back. */
  claimAddress(vip: string): Promise<void>;
  /**
   * Steps 2 and 3 on the target, in one request: claim the VIP's addresses (end of step 2),
   * then pull its access-table entries straight from the source's agent and create them here.
   * Reports progress as entries arrive.
   */
  importEntries(vip: string, source: MigrationAgent, onProgress: (moved: number) => void, options?: ImportOptions): Promise<ImportResult>;
  /**
   * Before step 1 on the target: hold the VIP (no packet may meet what comes), create its
   * entries from the source's snapshot, which starts the source's change journal for
   * `migration`, then take differences while they are large.
   */
  precopy?(vip: string, source: MigrationAgent, migration: string, onProgress: (moved: number) => void): Promise<PrecopyResult>;
  /** On the source: its change journal of the VIP is no longer needed. */
  endTracking?(vip: string): Promise<void>;
  /** On the source once the target has activated the VIP: delete its old entries (cleanUp). */
  deleteEntries(vip: string): Promise<void>;
  /** Step 4: the source forgets the VIP, the target switches it to `normal` and releases held packets in order. */
  forget(vip: string): Promise<void>;
  activate(vip: string): Promise<HoldRelease>;
  /** Abort on the target: forget the VIP, drop its imported entries and held packets (clients retransmit). */
  abort(vip: string): Promise<void>;
  /** Whether the VIP is `normal` here: on a target before the commit point, only after a takeover. */
  serves?(vip: string): Promise<boolean>;
  /** Where the source's entries can be read from (its agent's URL). */
  readonly url: string;
}

export interface ImportOptions {
  /** The migration whose pre-copy ran: only the difference since moves. */
  precopied?: string;
}

export interface ImportResult {
  /** Entries the target holds for the VIP now (after a difference: pre-copied ones included). */
  created: number;
  failed: number;
  /** Step 3 moved only the difference since the pre-copy. */
  difference?: { created: number; ended: number };
  /** Why the source could not vouch for a difference (step 3 copied the whole table). */
  fallback?: string;
  /** The target's claim of the addresses took this long (step 2's share). */
  claimMs?: number;
}

export interface PrecopyResult {
  created: number;
  failed: number;
  /** Entries in each further round's difference. */
  rounds: number[];
}

/** How many packets the target held while the VIP was migrating, released in order. */
export interface HoldRelease {
  released: number;
}

export type MigrationState = 'running' | 'done' | 'aborted';

export interface MigrationProgress {
  id: string;
  vip: string;
  from: string;
  to: string;
  state: MigrationState;
  /** The step running now, or the last one reached (the pre-copy before step 1). */
  step: Phase;
  startedAt: string;
  /** Durations of the finished steps. */
  steps: Partial<Record<`${Step}_ms`, number>>;
  totalMs?: number;
  entries: { moved: number; total: number };
  /** Packets the target held and then released in arrival order. */
  released: number;
  error?: string;
  /** After a failure, giving the VIP back (or finishing forward) failed too: recover() it later. */
  recoveryFailed?: boolean;
  /** The source deleting its old entries after step 4 (not part of totalMs). */
  cleanupMs?: number;
  /** The pre-copy before step 1 (part of totalMs, not of the steps): its time, entries and rounds, or why there was none. */
  precopy?: { ms: number; entries: number; rounds: number[]; error?: string };
  /** What step 3 moved after a pre-copy: entries created or refreshed, and deleted (ended on the source). */
  difference?: { created: number; ended: number };
  /** Why step 3 copied the whole table although a pre-copy ran. */
  fallback?: string;
}

export interface MigrationOptions {
  /** Per-step timeout; the step is abandoned and the migration aborted past it. */
  stepTimeoutMs: number;
  /**
   * A drill: fail at the end of the given step (for move_entries: after the target has
   * the entries, before the commit point), to exercise the abort path.
   */
  abortAt?: Exclude<Phase, 'activate'>;
  /** No pre-copy: step 3 copies the whole table (as before pre-copies existed). */
  skipPrecopy?: boolean;
  /** The pre-copy's own timeout (it runs before the hold, and may copy a large table). */
  precopyTimeoutMs?: number;
  /**
   * The negative control: step 1 (and the pre-copy, which holds too) is skipped, so the
   * target does not hold the VIP's packets and answers those that reach it before its
   * entries with resets.
   */
  skipPrepare?: boolean;
  /**
   * The controller's journal: each step is written down before it runs, and the commit
   * point before step 4 (one record, which is step 4's too); awaited, so nothing runs ahead
   * of its record.
   */
  journal?: MigrationJournal;
  /**
   * A test hook: waits in the middle of a step, where a crash hurts most — prepare: after
   * the target holds; move_address: after the source released, before the target claims;
   * move_entries: after the import, before the commit point; activate: past the commit
   * point, the source without its address, before it forgets and the target activates.
   */
  pause?: (step: Phase) => Promise<void>;
  now?: () => number;
  onProgress?: (p: MigrationProgress) => void;
  /**
   * How a step's work ended after the step was given up on its timeout: `error` undefined when
   * it succeeded (its request may still reach the appliance, and the answer say what it did).
   */
  onLate?: (step: Phase, error: unknown) => void;
  /**
   * The source's entry count as last seen (the controller's statistics), for the
   * progress total until step 3 knows it exactly. Counting now would cost the source a
   * second dump of its table in the middle of the move.
   */
  expectedEntries?: number;
}

export interface MigrationJournal {
  step(step: Phase): void | Promise<void>;
  /**
   * The commit point, and with it the record of step 4 (`activate`), which follows at once:
   * one write, not two, between step 3's end and step 4's requests (inside the hold).
   */
  commit(): void | Promise<void>;
}

class StepTimeout extends Error {
  constructor(step: Phase, ms: number) {
    super(`step ${step} did not finish within ${ms} ms`);
  }
}

function withTimeout<T>(step: Phase, ms: number, work: Promise<T>, onLate?: MigrationOptions['onLate']): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new StepTimeout(step, ms));
      work.then(
        () => onLate?.(step, undefined),
        (err: unknown) => onLate?.(step, err ?? new Error('rejected without a reason')),
      );
    }, ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs the migration and resolves with its final progress record (state `done` or
 * `aborted`); it never rejects, a failure is reported in the record.
 */
export async function migrate(
  id: string,
  vip: string,
  source: MigrationAgent,
  target: MigrationAgent,
  options: MigrationOptions,
): Promise<MigrationProgress> {
  const now = options.now ?? (() => performance.now());
  const progress: MigrationProgress = {
    id,
    vip,
    from: source.name,
    to: target.name,
    state: 'running',
    step: 'prepare',
    startedAt: new Date().toISOString(),
    steps: {},
    entries: { moved: 0, total: options.expectedEntries ?? 0 },
    released: 0,
  };
  const report = () => options.onProgress?.(structuredClone(progress));
  const started = now();
  let reached: Phase = 'prepare';
  // Once the target has every entry (the commit point) a failure is finished forward,
  // never rolled back: the source is about to forget the VIP and delete its entries.
  let committed = false;
  const drill = (step: Phase) => {
    if (options.abortAt === step) throw new Error(`drill: abort requested at step ${step}`);
  };

  const pause = async (step: Phase) => {
    await options.pause?.(step);
  };

  /** `recorded`: the journal has the step already (step 4's record is the commit point's). */
  const run = async <T>(step: Step, work: () => Promise<T>, recorded = false): Promise<T> => {
    if (!recorded) await options.journal?.step(step);
    progress.step = reached = step;
    report();
    const t0 = now();
    const result = await withTimeout(step, options.stepTimeoutMs, work(), options.onLate);
    progress.steps[`${step}_ms`] = Math.round((now() - t0) * 100) / 100;
    return result;
  };

  report(); // synchronously, so the caller has a record before the first await
  let precopied = false;
  try {
    // The negative control (no step 1) has no pre-copy either: the pre-copy holds the VIP.
    if (!options.skipPrecopy && !options.skipPrepare && target.precopy) {
      await options.journal?.step('precopy');
      progress.step = reached = 'precopy';
      report();
      const t0 = now();
      const ms = () => Math.round((now() - t0) * 100) / 100;
      try {
        const r = await withTimeout(
          'precopy',
          options.precopyTimeoutMs ?? options.stepTimeoutMs * 10,
          target.precopy(vip, source, id, (moved) => {
            progress.entries.moved = moved;
            report();
          }),
          options.onLate,
        );
        if (r.failed > 0) throw new Error(`${r.failed} entries could not be created on ${target.name}`);
        progress.precopy = { ms: ms(), entries: r.created, rounds: r.rounds };
        precopied = true;
      } catch (err) {
        // No pre-copy: what it left on the target goes (the VIP stays held there, as step 1
        // is about to hold it anyway), and step 3 copies the whole table.
        progress.precopy = { ms: ms(), entries: 0, rounds: [], error: err instanceof Error ? err.message : String(err) };
        await target.deleteEntries(vip);
        await source.endTracking?.(vip).catch(() => undefined);
      }
      progress.entries.moved = 0;
      report();
      await pause('precopy');
      drill('precopy');
    }
    await run('prepare', async () => {
      if (!options.skipPrepare) await target.prepare(vip);
      await pause('prepare');
      drill('prepare');
    });
    // The target's claim (end of step 2) goes with step 3's request: it claims, then takes the
    // difference, without a round trip to the controller between them inside the hold. The
    // journal has step 3 before that request; a recovery from step 2 or 3 is the same (the
    // address back to the source, the target aborts), so a drill of step 2 ends it at the
    // source's release.
    let claimMs: number | undefined;
    await run('move_address', async () => {
      await source.releaseAddress(vip);
      await pause('move_address');
      drill('move_address');
    });
    await run('move_entries', async () => {
      const result = await target.importEntries(
        vip,
        source,
        (moved) => {
          progress.entries.moved = moved;
          if (moved > progress.entries.total) progress.entries.total = moved;
          report();
        },
        precopied ? { precopied: id } : {},
      );
      claimMs = result.claimMs;
      if (result.failed > 0) throw new Error(`${result.failed} of ${result.created + result.failed} entries could not be created on ${target.name}`);
      progress.entries.moved = progress.entries.total = result.created;
      if (result.difference) progress.difference = result.difference;
      if (result.fallback) progress.fallback = result.fallback;
      await pause('move_entries');
      drill('move_entries');
      await options.journal?.commit();
      committed = true;
    });
    // The claim's time is step 2's, as the target measured it.
    if (claimMs !== undefined) {
      progress.steps.move_address_ms = Math.round(((progress.steps.move_address_ms ?? 0) + claimMs) * 100) / 100;
      progress.steps.move_entries_ms = Math.round(((progress.steps.move_entries_ms ?? 0) - claimMs) * 100) / 100;
    }
    // The source has given up the address and the target has the entries: the source
    // forgets the VIP while the target activates it, rather than one after the other.
    await run(
      'activate',
      async () => {
        await pause('activate');
        const [, activated] = await Promise.all([source.forget(vip), target.activate(vip)]);
        progress.released = activated.released;
      },
      options.journal !== undefined,
    );
    progress.totalMs = Math.round((now() - started) * 100) / 100;
    await cleanUp(vip, source, progress, now);
    progress.state = 'done';
  } catch (err) {
    progress.error = err instanceof Error ? err.message : String(err);
    progress.state = committed ? 'done' : 'aborted';
    await (committed ? finishForward(vip, source, target) : giveBack(vip, reached, source, target)).catch((e: unknown) => {
      progress.error += `; recovering failed too: ${e instanceof Error ? e.message : String(e)}`;
      progress.recoveryFailed = true;
    });
  }
  progress.totalMs ??= Math.round((now() - started) * 100) / 100;
  report();
  return progress;
}

/**
 * After step 4 the source deletes its copies of the entries: from the end of step 3 on
 * they serve nothing but packets that reach the source on a stale ARP cache, which they
 * still translate correctly, so the VIP need not wait for the delete (paced so that the
 * source's event sockets keep up: ~2 s for 100,000, 24–26 s for 1,000,000). The migration is
 * done — and the VIP free to move again — only once they are gone. Timed apart from the four
 * steps, as cleanup_ms.
 */
async function cleanUp(vip: string, source: MigrationAgent, progress: MigrationProgress, now: () => number): Promise<void> {
  const t0 = now();
  try {
    await source.deleteEntries(vip);
  } catch (err) {
    progress.error = `the VIP moved, but ${source.name} could not delete its old entries: ${err instanceof Error ? err.message : String(err)}`;
  }
  progress.cleanupMs = Math.round((now() - t0) * 100) / 100;
}

/** How far an interrupted migration (its controller died) had got, from the journal. */
export interface Interrupted {
  /** The last phase written down as started; null if none was. */
  reached: Phase | null;
  /** The commit point was written down: the source may have started deleting its entries. */
  committed: boolean;
}

/**
 * Ends a migration its controller did not live to end, the way migrate() ends one that fails
 * at that point: before the commit point the VIP goes back to the source, after it the target
 * takes it. A journal record is written before its action runs, so the actions may or may not
 * have happened: each is idempotent. Returns how it ended; throws if an appliance does not
 * answer (call again later: nothing is lost by trying twice).
 */
export async function recover(vip: string, source: MigrationAgent, target: MigrationAgent, at: Interrupted): Promise<'done' | 'aborted'> {
  if (at.committed) {
    await finishForward(vip, source, target);
    return 'done';
  }
  // A target that serves the VIP took it over: VRRP made it master when the source did not
  // take the address back (it died), and its abort became a takeover. There is nothing to give
  // back, and taking the address from the target now would drop the connections it serves.
  // (Not asked in a migration's own give-back: its shield keeps the target from taking over.)
  if (await target.serves?.(vip).catch(() => false)) return 'aborted';
  await giveBack(vip, at.reached ?? 'prepare', source, target);
  return 'aborted';
}

/**
 * Abort before the commit point: the source keeps (or gets back) the VIP, its entries
 * untouched. The address goes back first: until then the target keeps holding the
 * VIP's packets, and only then forgets it — a target that forgot the VIP while still
 * owning its address would answer its packets with resets. The target's abort deletes
 * every entry of the VIP there, pre-copied ones included; the source's change journal ends.
 */
async function giveBack(vip: string, reached: Phase, source: MigrationAgent, target: MigrationAgent): Promise<void> {
  let claimFailed: unknown;
  if (reached !== 'precopy' && reached !== 'prepare') {
    await target.releaseAddress(vip).catch(() => undefined);
    // A source that cannot claim the address back (it died mid-migration) still lets the
    // target abort: held there, the VIP would be served by nobody, and the target's abort is
    // what lets VRRP's choice of master take it over.
    await source.claimAddress(vip).catch((err: unknown) => {
      claimFailed = err;
    });
  }
  await target.abort(vip);
  await source.endTracking?.(vip).catch(() => undefined);
  if (claimFailed) throw claimFailed;
}

/** Failure after the commit point: the target has the entries and the address, so it takes the VIP. */
async function finishForward(vip: string, source: MigrationAgent, target: MigrationAgent): Promise<void> {
  await source.forget(vip).catch(() => undefined);
  await target.activate(vip);
  await source.deleteEntries(vip).catch(() => undefined);
}
