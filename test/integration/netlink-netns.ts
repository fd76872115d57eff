/** Network namespaces for the netlink integration tests: unique names, always removed. */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const PREFIX = 'vtnet';

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input === undefined ? {} : { input }) });
}

export function inNs(ns: string, cmd: string, args: string[], input?: string): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], input);
}

/** Removes namespaces of this part left over by a crashed run (test files run one at a time). */
export function removeLeftovers(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
}

export function createNs(tag = ''): string {
  const name = `${PREFIX}${tag}${randomBytes(3).toString('hex')}`;
  sh('ip', ['netns', 'add', name]);
  inNs(name, 'ip', ['link', 'set', 'lo', 'up']);
  return name;
}

export function deleteNs(name: string): void {
  try {
    sh('ip', ['netns', 'del', name]);
  } catch {
    // already gone
  }
}
