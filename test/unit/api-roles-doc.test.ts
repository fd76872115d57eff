/** docs/api.md shows the route tables the servers enforce: each table there is rendered from the code's. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROLES } from '../../src/api/auth.js';
import type { RouteRoles } from '../../src/api/server.js';
import { AGENT_ROLES } from '../../src/appliance/agent.js';
import { CONTROLLER_ROLES } from '../../src/controller/routes.js';
import { KEEPER_ROLES } from '../../src/keeper/keeper.js';

/** The Markdown table of one API: a row per route, a column per role, ✓ where admitted. */
function roleTable(table: RouteRoles): string {
  const head = `| route | ${ROLES.join(' | ')} |\n| --- |${ROLES.map(() => ' :-: |').join('')}`;
  const rows = Object.entries(table).map(([route, roles]) => `| \`${route}\` | ${ROLES.map((r) => (roles.includes(r) ? '✓' : '')).join(' | ')} |`);
  return [head, ...rows].join('\n').replace(/ +\|/g, ' |').replace(/\| +\|/g, '| |');
}

describe('docs/api.md', () => {
  const doc = readFileSync(new URL('../../docs/api.md', import.meta.url), 'utf8');
  it.each([
    ['agent', AGENT_ROLES],
    ['controller', CONTROLLER_ROLES],
    ['keeper', KEEPER_ROLES],
  ] as const)('shows the %s API\'s route table as enforced', (_name, table) => {
    expect(doc).toContain(roleTable(table));
  });
});
