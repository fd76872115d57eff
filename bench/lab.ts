/**
 * How long `lab up` and `lab down` take (the CLI, as a user or CI runs it), over a few
 * rounds. Needs root and a build. Writes bench/results/lab.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CLI, REPO_ROOT, reapAbandonedLabs } from '../src/lab/lab.js';
import { run } from '../src/lab/netns.js';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const name = `vtlabb${Math.floor(Math.random() * 0xffff).toString(16)}`;

async function timed(args: string[]): Promise<{ wallMs: number; json: Record<string, unknown> }> {
  const t = performance.now();
  const r = await run(process.execPath, [CLI, 'lab', ...args, '--name', name, '--json']);
  const wallMs = Math.round(performance.now() - t);
  if (r.code !== 0) throw new Error(`lab ${args.join(' ')}: ${r.stderr}`);
  return { wallMs, json: JSON.parse(r.stdout) as Record<string, unknown> };
}

await reapAbandonedLabs('vtlabb');
const rows: Array<{ round: number; upWallMs: number; upTotalMs: number; buildMs: number; processesMs: number; downWallMs: number; downMs: number }> = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const up = await timed(['up']);
    const t = up.json.timings as { totalMs: number; buildMs: number; processesMs: number };
    const down = await timed(['down']);
    rows.push({ round, upWallMs: up.wallMs, upTotalMs: t.totalMs, buildMs: t.buildMs, processesMs: t.processesMs, downWallMs: down.wallMs, downMs: down.json.ms as number });
  }
} finally {
  await run(process.execPath, [CLI, 'lab', 'down', '--name', name]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cols = ['upWallMs', 'upTotalMs', 'buildMs', 'processesMs', 'downWallMs', 'downMs'] as const;
console.log(['round', ...cols].map((c) => c.padStart(12)).join(''));
for (const r of rows) console.log([r.round, ...cols.map((c) => r[c])].map((v) => String(v).padStart(12)).join(''));
console.log(['median', ...cols.map((c) => median(rows.map((r) => r[c])))].map((v) => String(v).padStart(12)).join(''));
console.log('\nupWallMs/downWallMs: the whole CLI run (node start included); upTotalMs: inside lab up;');
console.log('buildMs: namespaces, links, addresses, routes; processesMs: the servers\' services until they listen.');

const out = path.join(REPO_ROOT, 'bench', 'results', 'lab.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(
  out,
  JSON.stringify({ bench: 'lab', date: new Date().toISOString(), rounds: rows, median: Object.fromEntries(cols.map((c) => [c, median(rows.map((r) => r[c]))])) }, null, 2) + '\n',
);
console.log(`wrote ${path.relative(REPO_ROOT, out)}`);
