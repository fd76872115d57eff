/**
 * The one module that owns the `nft` tool: batches go to `nft -j -f <file>` (one atomic
 * transaction each), listings come from `nft -j list ...`. Errors carry nft's own stderr.
 *
 * Why a file and not `-f -`: nft opens /dev/stdin by name, and Node's child stdin is a
 * socketpair, which cannot be opened that way (ENXIO). The file is private and removed at once.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One command of a `nft -j` batch (`{ add: { rule: ... } }`). */
export type NftCommand = Record<string, Record<string, unknown>>;
export interface NftBatch {
  nftables: NftCommand[];
}

export class NftError extends Error {
  constructor(
    readonly operation: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(`nft ${operation} failed (exit ${exitCode}): ${stderr.trim() || 'no message'}`);
    this.name = 'NftError';
  }
}

export interface NftRunner {
  /** Applies a batch atomically; `check` only asks the kernel whether it would apply. */
  apply(batch: NftBatch, options?: { check?: boolean }): Promise<void>;
  /** `nft -j list <what...>`, parsed. */
  list(what: string[]): Promise<NftBatch>;
}

function run(args: string[], operation: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('nft', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new NftError(operation, e.message, null)));
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new NftError(operation, stderr, code));
    });
    child.stdin.end();
  });
}

/** nft in the calling process's network namespace. */
export const nft: NftRunner = {
  async apply(batch, options = {}) {
    if (batch.nftables.length === 0) return;
    const dir = await mkdtemp(join(tmpdir(), 'vipshift-nft-'));
    const file = join(dir, 'batch.json');
    try {
      await writeFile(file, JSON.stringify(batch), { mode: 0o600 });
      await run([...(options.check ? ['-c'] : []), '-j', '-f', file], options.check ? 'check' : 'apply');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  async list(what) {
    const text = await run(['-j', 'list', ...what], `list ${what.join(' ')}`);
    return JSON.parse(text) as NftBatch;
  },
};

/**
 * Whether this kernel has the nft `queue` expression: the kernel is asked to check (not
 * commit) a throwaway table that uses it. Debian's kernel has it; some kernels only have
 * xt_NFQUEUE (iptables-nft).
 */
export async function nftHasQueue(runner: NftRunner = nft): Promise<boolean> {
  const t = { family: 'ip', table: 'vipshift_probe' };
  const probe: NftBatch = {
    nftables: [
      { add: { table: { family: 'ip', name: t.table } } },
      { add: { chain: { ...t, name: 'probe', type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } } },
      { add: { rule: { ...t, chain: 'probe', expr: [{ match: { op: '==', left: { meta: { key: 'mark' } }, right: 1 } }, { queue: { num: 0 } }] } } },
    ],
  };
  try {
    await runner.apply(probe, { check: true });
    return true;
  } catch (e) {
    if (e instanceof NftError && /No such file or directory|not supported/i.test(e.stderr)) return false;
    throw e;
  }
}

/** Named counters of a table: name → packets and bytes. */
export async function listCounters(table: string, runner: NftRunner = nft): Promise<Map<string, { packets: number; bytes: number }>> {
  const listing = await runner.list(['counters', 'table', 'ip', table]);
  const out = new Map<string, { packets: number; bytes: number }>();
  for (const item of listing.nftables) {
    const c = item.counter as { name?: string; packets?: number; bytes?: number } | undefined;
    if (c?.name !== undefined) out.set(c.name, { packets: c.packets ?? 0, bytes: c.bytes ?? 0 });
  }
  return out;
}
