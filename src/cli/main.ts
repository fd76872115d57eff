/**
 * Subcommand dispatch. Each entry loads its part lazily so that, say, `vipshift lab`
 * does not load blessed or better-sqlite3.
 */
export type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<Command> }> = {
  check: { summary: 'validate a configuration (appliance, keeper, controller, keepalived.conf) without running it', load: async () => (await import('./check.js')).check },
  'import-keepalived': { summary: 'keepalived.conf → vipshift configuration', load: async () => (await import('./import-keepalived.js')).importKeepalived },
  pki: { summary: 'create the cluster credentials (keys of every API peer)', load: async () => (await import('./pki.js')).pki },
  appliance: { summary: 'run the appliance: NAT engine, access table, agent API', load: async () => (await import('./appliance.js')).appliance },
  controller: { summary: 'run the controller: inventory and migrations', load: async () => (await import('./controller.js')).controller },
  status: { summary: 'VIP owners, mode tables and counters of the site', load: async () => (await import('./status.js')).status },
  migrate: { summary: 'move a VIP with its live connections to another appliance', load: async () => (await import('./migrate.js')).migrateCommand },
  plan: { summary: 'what the controller would move and why (loads before and after)', load: async () => (await import('./plan.js')).plan },
  drain: { summary: 'move every VIP off an appliance (maintenance on)', load: async () => (await import('./drain.js')).drain },
  backend: { summary: 'add|remove|weight|drain VIP ADDRESS[:PORT]: a backend on every appliance', load: async () => (await import('./backend.js')).backend },
  reload: { summary: 'appliances re-read their configuration and apply the difference', load: async () => (await import('./backend.js')).reload },
  pin: { summary: 'keep a VIP on its appliance: never moved', load: async () => (await import('./pin.js')).pin },
  unpin: { summary: 'let a pinned VIP move again', load: async () => (await import('./pin.js')).unpin },
  maintenance: { summary: 'APPLIANCE on|off: in maintenance it gets no VIP', load: async () => (await import('./maintenance.js')).maintenance },
  rebalance: { summary: 'auto|manual: whether the controller moves VIPs by itself', load: async () => (await import('./rebalance.js')).rebalance },
  lab: { summary: 'the site in network namespaces', load: async () => (await import('./lab.js')).lab },
  console: { summary: 'the operator console: site, mode and access tables, migrations, plan', load: async () => (await import('./console.js')).consoleCommand },
  metrics: { summary: 'Prometheus metrics of a process, fetched with the cluster credentials', load: async () => (await import('./metrics.js')).metricsCommand },
  events: { summary: 'an appliance\'s events as JSON lines (--follow: as they happen)', load: async () => (await import('./events.js')).eventsCommand },
  vrrp: { summary: 'the VRRP speaker alone (vrrp: section of --config FILE)', load: async () => (await import('./vrrp.js')).vrrp },
  keeper: { summary: 'keep table copies of appliances on a server (failover)', load: async () => (await import('./keeper.js')).keeper },
  firmware: { summary: 'A/B system slots: update (signed images only), commit, status, sign, verify', load: async () => (await import('./firmware.js')).firmware },
};

export function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(20)} ${c.summary}`);
  return `usage: vipshift COMMAND [ARGS...]\n\ncommands:\n${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`vipshift: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return (await command.load())(rest);
}
