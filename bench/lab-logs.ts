/** The lab's logs, copied out of its state directory (which goes with the lab) for a benchmark's later reading. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Copies the `*.log` files of `stateDir` (not its sockets) into a folder named after `bench`; says where, and why. */
export function keepLabLogs(stateDir: string, bench: string, why: string): string {
  const to = path.join(os.tmpdir(), `vipshift-${bench}`);
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(stateDir).filter((f) => f.endsWith('.log'))) fs.copyFileSync(path.join(stateDir, f), path.join(to, f));
  console.error(`${why}: the lab's logs are in ${to}`);
  return to;
}
