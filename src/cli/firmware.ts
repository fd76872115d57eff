/**
 * `vipshift firmware`: the appliance's A/B system slots.
 *   update FILE|-   write an image (.img or .img.zst; - reads standard input) into the slot
 *                   that is not running and boot it once at the next reboot (--reboot: now)
 *   commit          make the running slot the default (done by vipshift-slot-health.service)
 *   status [--json] slots, firmware version and the role services
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { applianceSlotPaths, commitBootedSlot, readSlotState, updateInactiveSlot } from '../firmware/slots.js';
import { roleUnits } from '../firmware/units.js';

const USAGE = 'usage: vipshift firmware update FILE|- [--reboot] | commit | status [--json]\n';

export async function firmware(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const paths = applianceSlotPaths;
  switch (verb) {
    case 'update': {
      const file = rest.find((a) => !a.startsWith('--'));
      if (!file) {
        process.stderr.write(USAGE);
        return 2;
      }
      const input = file === '-' ? process.stdin : createReadStream(file, { highWaterMark: 1 << 20 });
      const result = await updateInactiveSlot(input, file === '-' ? 'standard input' : file, paths, (m) =>
        process.stderr.write(`${m}\n`),
      );
      process.stdout.write(
        `slot ${result.slot}: ${(result.bytes / 2 ** 20).toFixed(0)} MiB written in ${result.seconds.toFixed(1)} s; ` +
          `it boots once at the next reboot and becomes the default when healthy\n`,
      );
      if (rest.includes('--reboot')) spawn('systemctl', ['--no-block', 'reboot'], { stdio: 'inherit' });
      return 0;
    }
    case 'commit':
      process.stdout.write(`${await commitBootedSlot(paths)}\n`);
      return 0;
    case 'status': {
      const state = await readSlotState(paths);
      const version = (await readFile('/opt/vipshift/VERSION', 'utf8').catch(() => 'unknown')).trim();
      const roles = await roleUnits();
      const meminfo = await readFile('/proc/meminfo', 'utf8');
      const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
      const memory = { totalBytes: kib('MemTotal'), usedBytes: kib('MemTotal') - kib('MemAvailable') };
      const fs = await statfs('/var/lib/vipshift');
      const data = { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
      if (rest.includes('--json')) {
        process.stdout.write(`${JSON.stringify({ version, ...state, memory, data, roles })}\n`);
        return 0;
      }
      process.stdout.write(
        `firmware ${version}: booted slot ${state.booted ?? '-'}, default ${state.default}` +
          `${state.trying ? `, trying ${state.trying} at the next boot` : ''}\n`,
      );
      for (const r of roles) {
        const mem = r.memoryBytes ? `, ${(r.memoryBytes / 2 ** 20).toFixed(1)} MiB` : '';
        process.stdout.write(`${r.unit}: ${r.configured ? r.active : 'not configured'}` +
          `${r.restarts ? `, ${r.restarts} restarts` : ''}${mem}\n`);
        for (const line of r.configured ? r.lastLog : []) process.stdout.write(`  ${line}\n`);
      }
      return 0;
    }
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}
