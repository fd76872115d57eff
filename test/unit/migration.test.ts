import { describe, expect, it } from 'vitest';
import { migrate, recover, type HoldRelease, type ImportOptions, type ImportResult, type MigrationAgent, type MigrationProgress } from '../../src/migration/migration.js';

/**
 * An appliance reduced to what the four steps change: its mode table, whether it has
 * the VIP's addresses, and its entries. Real appliances are exercised by the
 * integration tests; this checks the order of the steps and every abort path.
 */
class ModelAppliance implements MigrationAgent {
  mode: 'normal' | 'migrating' | 'absent' = 'absent';
  hasAddress = false;
  entries = new Set<string>();
  held = 0;
  failOn?: keyof MigrationAgent;
  calls: string[] = [];
  constructor(
    readonly name: string,
    readonly url = `http://${name}`,
  ) {}
  private step(call: keyof MigrationAgent) {
    this.calls.push(call);
    if (this.failOn === call) throw new Error(`${this.name}: ${call} failed`);
  }
  async prepare() {
    this.step('prepare');
    this.mode = 'migrating';
    this.held = 3;
  }
  async releaseAddress() {
    this.step('releaseAddress');
    this.hasAddress = false;
  }
  async claimAddress(_vip: string) {
    this.step('claimAddress');
    this.hasAddress = true;
  }
  async importEntries(vip: string, source: MigrationAgent, onProgress: (n: number) => void, _options: ImportOptions = {}): Promise<ImportResult> {
    await this.claimAddress(vip);
    this.step('importEntries');
    for (const e of (source as ModelAppliance).entries) this.entries.add(e);
    onProgress(this.entries.size);
    return { created: this.entries.size, failed: 0 };
  }
  async deleteEntries() {
    this.step('deleteEntries');
    this.entries.clear();
  }
  async forget() {
    this.step('forget');
    this.mode = 'absent';
  }
  async activate(): Promise<HoldRelease> {
    this.step('activate');
    this.mode = 'normal';
    const r = { released: this.held };
    this.held = 0;
    return r;
  }
  async serves() {
    return this.mode === 'normal';
  }
  async abort() {
    this.step('abort');
    this.mode = 'absent';
    this.entries.clear();
    this.held = 0;
  }
}

function site() {
  const a = new ModelAppliance('lb1');
  const b = new ModelAppliance('lb2');
  a.mode = 'normal';
  a.hasAddress = true;
  for (let i = 0; i < 5; i++) a.entries.add(`c${i}`);
  return { a, b };
}

describe('the four-step migration', () => {
  it('moves mode, address and entries in the patent order and reports each step', async () => {
    const { a, b } = site();
    const seen: MigrationProgress[] = [];
    const p = await migrate('m1', 'vip1', a, b, { stepTimeoutMs: 1000, expectedEntries: 4, onProgress: (x) => seen.push(x) });
    expect(p.state).toBe('done');
    expect([a.mode, a.hasAddress, a.entries.size]).toEqual(['absent', false, 0]);
    expect([b.mode, b.hasAddress, b.entries.size]).toEqual(['normal', true, 5]);
    expect(b.calls).toEqual(['prepare', 'claimAddress', 'importEntries', 'activate']);
    // The source releases before the target claims; it deletes its entries only once the target is active.
    expect(a.calls).toEqual(['releaseAddress', 'forget', 'deleteEntries']);
    expect(p.cleanupMs).toBeGreaterThanOrEqual(0);
    expect(Object.keys(p.steps)).toEqual(['prepare_ms', 'move_address_ms', 'move_entries_ms', 'activate_ms']);
    expect(p.entries).toEqual({ moved: 5, total: 5 });
    expect(p.released).toBe(3);
    expect(seen.map((s) => s.step)).toContain('move_entries');
    expect(seen[0]!.entries.total).toBe(4); // the controller's last figure until step 3 knows better
  });

  for (const abortAt of ['prepare', 'move_address', 'move_entries'] as const) {
    it(`an abort at ${abortAt} gives the VIP back to the source with its entries`, async () => {
      const { a, b } = site();
      const p = await migrate('m2', 'vip1', a, b, { stepTimeoutMs: 1000, abortAt });
      expect(p.state).toBe('aborted');
      expect(p.error).toContain(abortAt);
      expect([a.mode, a.hasAddress, a.entries.size]).toEqual(['normal', true, 5]);
      expect([b.mode, b.hasAddress, b.entries.size]).toEqual(['absent', false, 0]);
    });
  }

  it('a step that hangs is abandoned at its timeout and rolled back', async () => {
    const { a, b } = site();
    b.importEntries = () => new Promise(() => undefined);
    const p = await migrate('m3', 'vip1', a, b, { stepTimeoutMs: 50 });
    expect(p.state).toBe('aborted');
    expect(p.error).toMatch(/move_entries did not finish within 50 ms/);
    expect([a.hasAddress, a.entries.size, b.mode]).toEqual([true, 5, 'absent']);
  });

  it("a step given up on its timeout reports its request's late answer", async () => {
    const { a, b } = site();
    let answer: (err: Error) => void = () => undefined;
    b.claimAddress = () => new Promise((_, reject) => (answer = reject));
    const late: [string, unknown][] = [];
    const p = await migrate('m5', 'vip1', a, b, { stepTimeoutMs: 50, onLate: (step, err) => late.push([step, err]) });
    // The claim goes with step 3's request (claim, then import): that step waits for it.
    expect(p.error).toMatch(/move_entries did not finish within 50 ms/);
    expect(late).toEqual([]);
    answer(new Error('controller epoch 3 is older than 14'));
    await new Promise((r) => setImmediate(r));
    expect(late).toEqual([['move_entries', new Error('controller epoch 3 is older than 14')]]);
    expect([a.hasAddress, a.entries.size, b.mode]).toEqual([true, 5, 'absent']);
  });

  it("step 2's time counts the claim (in step 3's request) as the target measured it", async () => {
    const { a, b } = site();
    const importEntries = b.importEntries.bind(b);
    b.importEntries = async (vip, source, onProgress, options) => ({ ...(await importEntries(vip, source, onProgress, options)), claimMs: 7 });
    let t = 0;
    const p = await migrate('m6', 'vip1', a, b, { stepTimeoutMs: 1000, now: () => (t += 10) });
    expect(p.steps.move_address_ms).toBe(10 + 7);
    expect(p.steps.move_entries_ms).toBe(10 - 7);
  });

  it('a drill of step 2 ends the migration at the source\'s release: the target never claims, the source claims back', async () => {
    const { a, b } = site();
    const p = await migrate('m7', 'vip1', a, b, { stepTimeoutMs: 1000, abortAt: 'move_address' });
    expect(p.state).toBe('aborted');
    expect(b.calls).toEqual(['prepare', 'releaseAddress', 'abort']);
    expect(a.calls).toContain('claimAddress');
    expect([a.hasAddress, b.hasAddress]).toEqual([true, false]);
  });

  it('a source that cannot claim the address back (it died mid-migration) still lets the target abort; the migration says recovery failed', async () => {
    const { a, b } = site();
    b.failOn = 'importEntries';
    a.failOn = 'claimAddress';
    const p = await migrate('m8', 'vip1', a, b, { stepTimeoutMs: 1000 });
    expect(p.state).toBe('aborted');
    expect(p.recoveryFailed).toBe(true);
    expect(p.error).toMatch(/lb2: importEntries failed; recovering failed too: lb1: claimAddress failed/);
    // The target let the address go and dropped the VIP: it holds nothing for a dead source.
    expect(b.calls.slice(-2)).toEqual(['releaseAddress', 'abort']);
    expect([b.mode, b.hasAddress, b.entries.size]).toEqual(['absent', false, 0]);

    // VRRP then made the target master and its abort took the VIP over: the controller's next
    // recovery finds it serving and gives nothing back (its address and entries stay).
    b.mode = 'normal';
    b.hasAddress = true;
    b.entries.add('c0');
    const [aCalls, bCalls] = [a.calls.length, b.calls.length];
    expect(await recover('vip1', a, b, { reached: 'move_entries', committed: false })).toBe('aborted');
    expect([a.calls.length, b.calls.length]).toEqual([aCalls, bCalls]);
    expect([b.mode, b.hasAddress, b.entries.size]).toEqual(['normal', true, 1]);
  });

  it('a failure after the source began deleting is finished forward, never rolled back', async () => {
    const { a, b } = site();
    a.failOn = 'forget';
    const p = await migrate('m4', 'vip1', a, b, { stepTimeoutMs: 1000 });
    expect(p.state).toBe('done');
    expect(p.error).toContain('forget failed');
    expect([b.mode, b.hasAddress, b.entries.size]).toEqual(['normal', true, 5]);
  });
});
