/**
 * A VIP's slot table: which backend each of its slots sends a new connection to. The kernel
 * picks a slot for each new connection (`numgen inc` for round robin, `jhash` of the client's
 * address for the two hashes) and looks it up in the VIP's pool maps (ruleset.ts), so every
 * scheduling decision is a map element and a pool change rewrites only the slots that change.
 * Pure functions, no I/O.
 *
 *   roundrobin  smooth weighted round robin laid out over the slots: consecutive connections
 *               go to different backends, each backend's share of slots follows its weight.
 *   sourcehash  the client's hash modulo the pool (weights by repetition): the classic
 *               `hash mod N`, so when N changes nearly every client moves.
 *   maglev      Maglev's lookup table (Eisenbud et al., NSDI 2016): each backend fills the
 *               slots in its own permutation; when one goes only its slots (and a few more)
 *               change hands. Weights by turns per round, as IPVS's mh scheduler does.
 */
import { createHash } from 'node:crypto';
import type { Scheduler } from '../config/appliance.js';

/**
 * Slots per VIP. Maglev's table size must be prime and much larger than the pool: with 10
 * backends, one going keeps 87 % of the slots on their backend at 1,021 slots and 89 % at
 * 4,093 (90 % is the ideal). Round robin and source hash only need enough slots to share out
 * weights. The slots hold a target index, so a table of 4,093 costs 4,093 small elements once.
 */
export const SLOTS: Readonly<Record<Scheduler, number>> = { roundrobin: 256, sourcehash: 256, maglev: 4093 };

/** A backend that takes new connections: its name and weight (> 0). */
export interface Member {
  key: string;
  weight: number;
}

/** The member index of every slot; empty when there is no member. */
export function slotTable(scheduler: Scheduler, members: readonly Member[], size = SLOTS[scheduler]): number[] {
  if (members.some((m) => !(m.weight > 0) || !Number.isInteger(m.weight))) throw new Error('every member of a slot table has a whole weight above 0');
  if (members.length === 0) return [];
  switch (scheduler) {
    case 'roundrobin':
      return smoothRoundRobin(members, size);
    case 'sourcehash':
      return hashModulo(members, size);
    case 'maglev':
      return maglev(members, size);
  }
}

/** Smooth weighted round robin: each step every member gains its weight, the richest is picked and pays the total. */
function smoothRoundRobin(members: readonly Member[], size: number): number[] {
  const total = members.reduce((s, m) => s + m.weight, 0);
  const current = members.map(() => 0);
  const out: number[] = [];
  for (let slot = 0; slot < size; slot++) {
    let best = 0;
    for (let i = 0; i < members.length; i++) {
      current[i]! += members[i]!.weight;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    out.push(best);
  }
  return out;
}

/** Slot i → the (i mod W)-th of the members repeated by weight: a hash modulo the pool. */
function hashModulo(members: readonly Member[], size: number): number[] {
  const repeated = members.flatMap((m, i) => Array.from({ length: m.weight }, () => i));
  return Array.from({ length: size }, (_, slot) => repeated[slot % repeated.length]!);
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Two independent 32-bit hashes of a backend's name: its permutation's offset and skip. */
function hashes(key: string): [number, number] {
  const digest = createHash('sha256').update(key).digest();
  return [digest.readUInt32BE(0), digest.readUInt32BE(4)];
}

function maglev(members: readonly Member[], size: number): number[] {
  if (size < 2 || !isPrime(size)) throw new Error(`a Maglev table needs a prime size, not ${size}`);
  // The table must not depend on the order the backends are listed in.
  const order = members.map((m, i) => ({ m, i })).sort((a, b) => (a.m.key < b.m.key ? -1 : a.m.key > b.m.key ? 1 : 0));
  const divisor = members.reduce((g, m) => gcd(g, m.weight), 0);
  const perms = order.map(({ m, i }) => {
    const [h1, h2] = hashes(m.key);
    return { index: i, offset: h1 % size, skip: (h2 % (size - 1)) + 1, next: 0, turns: m.weight / divisor };
  });
  const table = new Array<number>(size).fill(-1);
  let filled = 0;
  for (;;) {
    for (const p of perms) {
      for (let t = 0; t < p.turns; t++) {
        let slot: number;
        do slot = (p.offset + p.next++ * p.skip) % size;
        while (table[slot] !== -1);
        table[slot] = p.index;
        if (++filled === size) return table;
      }
    }
  }
}

function isPrime(n: number): boolean {
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return n > 1;
}
