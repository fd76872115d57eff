/**
 * The one module that owns `iptables-nft`. It is needed only on kernels that have xt_NFQUEUE
 * but not the nft `queue` expression: one permanent rule in the raw PREROUTING chain
 * (priority −300, before conntrack) queues every packet the vipshift table marked as held.
 * The rule never changes during a migration; the nftables sets decide what is marked.
 */
import { spawn } from 'node:child_process';

export class IptablesError extends Error {
  constructor(
    readonly operation: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(`iptables-nft ${operation} failed (exit ${exitCode}): ${stderr.trim() || 'no message'}`);
    this.name = 'IptablesError';
  }
}

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('iptables-nft', ['-w', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new IptablesError(args.join(' '), e.message, null)));
    child.on('close', (code) => resolve({ code, stderr: Buffer.concat(err).toString('utf8') }));
  });
}

const ruleSpec = (mark: number, queueNumber: number): string[] => {
  const m = `0x${(mark >>> 0).toString(16)}`;
  return ['PREROUTING', '-m', 'mark', '--mark', `${m}/${m}`, '-m', 'comment', '--comment', 'vipshift hold', '-j', 'NFQUEUE', '--queue-num', String(queueNumber)];
};

/** Adds the hold's queue rule unless it is there already. */
export async function ensureHoldQueueRule(mark: number, queueNumber: number): Promise<void> {
  const spec = ruleSpec(mark, queueNumber);
  if ((await run(['-t', 'raw', '-C', ...spec])).code === 0) return;
  const r = await run(['-t', 'raw', '-A', ...spec]);
  if (r.code !== 0) throw new IptablesError('add the hold queue rule', r.stderr, r.code);
}

/** Removes the hold's queue rule (every copy of it); absent is fine. */
export async function removeHoldQueueRule(mark: number, queueNumber: number): Promise<void> {
  const spec = ruleSpec(mark, queueNumber);
  while ((await run(['-t', 'raw', '-C', ...spec])).code === 0) {
    const r = await run(['-t', 'raw', '-D', ...spec]);
    if (r.code !== 0) throw new IptablesError('remove the hold queue rule', r.stderr, r.code);
  }
}
