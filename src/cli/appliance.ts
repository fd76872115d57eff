/**
 * `vipshift appliance --config FILE [--credentials DIR]`: the appliance process — the NAT
 * engine, the access table, the VIP addresses and the agent API the controller drives
 * (src/appliance/start.ts). It runs until SIGTERM or SIGINT.
 * `vipshift appliance --keepalived keepalived.conf [--config FILE]`: the same from a
 * keepalived configuration (src/keepalived/appliance-config.ts), FILE then holding only what
 * keepalived cannot say. SIGHUP (as keepalived) and `vipshift reload` re-read the files and
 * apply the difference (src/appliance/appliance.ts reload()).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { DEFAULT_CREDENTIALS_DIR } from '../api/auth.js';
import { startAppliance } from '../appliance/start.js';
import { loadApplianceConfig, type ApplianceConfig } from '../config/appliance.js';
import { ApplianceConfigFile } from '../config/edit.js';
import { ReconfigureError } from '../nat/engine.js';
import { ConfigError, formatIssue } from '../config/load.js';
import { formatWarning } from '../keepalived/diagnostics.js';
import { loadKeepalivedAppliance } from '../keepalived/appliance-config.js';
import { createLogger } from '../log/logger.js';
import { runDaemon, type Stop } from './daemon.js';

const USAGE = 'usage: vipshift appliance --config FILE [--credentials DIR]\n       vipshift appliance --keepalived KEEPALIVED_CONF [--config FILE] [--credentials DIR]\n';

/** Where the configuration made from keepalived.conf is written for the VRRP speaker's process. */
const RUNTIME_DIR = '/run/vipshift';

interface Loaded {
  config: ApplianceConfig;
  /** The file the VRRP speaker's process reads its `vrrp:` section from. */
  speakerFile: string;
  /** From keepalived.conf: the configuration to write to speakerFile. */
  merged?: unknown;
}

/** --config alone, or keepalived.conf with --config over it (warnings on stderr). Throws ConfigError. */
async function load(values: { config?: string; keepalived?: string }): Promise<Loaded> {
  if (!values.keepalived) return { config: await loadApplianceConfig(values.config!), speakerFile: values.config! };
  const { config, merged, warnings } = await loadKeepalivedAppliance(values.keepalived, values.config);
  for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`);
  return { config, merged, speakerFile: `${RUNTIME_DIR}/${config.appliance}.${process.pid}.keepalived.json` };
}

export function appliance(args: string[]): Promise<number> {
  const missing = (values: { config?: string; keepalived?: string }) => (values.config || values.keepalived ? undefined : '--config or --keepalived is required');
  return runDaemon({ command: 'appliance', usage: USAGE, options: ['config', 'credentials', 'keepalived'], missing }, args, start);
}

async function start(values: { config?: string; credentials?: string; keepalived?: string }): Promise<Stop> {
  const loaded = await load(values);
  const { config } = loaded;
  if (loaded.merged !== undefined) {
    mkdirSync(RUNTIME_DIR, { recursive: true, mode: 0o755 });
    writeFileSync(loaded.speakerFile, `${JSON.stringify(loaded.merged, null, 2)}\n`);
  }
  const logger = createLogger({ name: 'appliance', base: { appliance: config.appliance } });
  let fatal: Error | undefined;
  const running = await startAppliance({
    config,
    configPath: loaded.speakerFile,
    credentialsDir: values.credentials ?? DEFAULT_CREDENTIALS_DIR,
    logger,
    speakerCommand: (configPath) => [process.execPath, process.argv[1]!, 'vrrp', '--config', configPath, '--control'],
    onFatal: (err) => {
      // A part died: stop, and exit non-zero so that systemd (Restart=always) brings the
      // appliance back whole, rather than a clean exit it would take for an operator's stop.
      fatal ??= err;
      logger.error({ err: err.message }, 'the VRRP speaker died: stopping the appliance (it exits 1 to be restarted)');
      process.kill(process.pid, 'SIGTERM');
    },
    loadConfig: async () => (await load(values)).config,
    // Backend changes are written into --config; from keepalived.conf they are refused.
    ...(values.keepalived ? {} : { configFile: new ApplianceConfigFile(values.config!) }),
  });
  // SIGHUP, as keepalived: read the files again and apply the difference. An invalid file, or a
  // change that cannot be made at run time, changes nothing and says why.
  const reread = () => {
    running.appliance.reload().then(
      (result) => logger.info({ action: 'reload', ...result }, 'SIGHUP: configuration reloaded'),
      (err: unknown) => {
        const problems = err instanceof ConfigError ? err.issues.map(formatIssue) : err instanceof ReconfigureError ? err.problems : [String(err)];
        logger.error({ problems }, 'SIGHUP: configuration refused; nothing changed');
      },
    );
  };
  process.on('SIGHUP', reread);
  return async () => {
    process.off('SIGHUP', reread);
    await running.stop();
    if (loaded.merged !== undefined) rmSync(loaded.speakerFile, { force: true });
    const code = fatal ? 1 : 0;
    logger.info({ code }, 'stopped');
    // Every part is stopped; a client's keep-alive socket or a timer left by one must not keep a
    // stopped appliance from exiting (systemd would wait for it, then not restart it in time).
    process.exit(code);
  };
}
