/**
 * `vipshift firmware`: the appliance's A/B system slots.
 *   update FILE|-   write an image (.img or .img.zst; - reads standard input) into the slot
 *                   that is not running and boot it once at the next reboot (--reboot: now);
 *                   only an image signed by a key of the box's firmware-keys/ is taken
 *   commit          make the running slot the default (done by vipshift-slot-health.service)
 *   status [--json] slots, firmware version, trusted keys, time client and the role services
 *   sign IMAGE --key PRIVATE.pem        sign a raw image's system (the image build does it)
 *   verify IMAGE --keys DIR             check a raw image as an update would
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { keyFingerprint, rawPublicKey } from '../firmware/signature.js';
import { applianceSlotPaths, commitBootedSlot, readSlotState, updateInactiveSlot } from '../firmware/slots.js';
import { timeSync } from '../firmware/timesync.js';
import { loadTrustedKeys, signImageFile, verifyImageFile } from '../firmware/trust.js';
import { roleUnits } from '../firmware/units.js';

const USAGE =
  'usage: vipshift firmware update FILE|- [--reboot] | commit | status [--json] | sign IMAGE --key PRIVATE.pem | verify IMAGE --keys DIR\n';

const option = (args: string[], name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

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
      ).catch((e: Error) => {
        process.stderr.write(`firmware update refused: ${e.message}\n`);
        return null;
      });
      if (!result) return 1;
      process.stdout.write(
        `slot ${result.slot}: ${(result.bytes / 2 ** 20).toFixed(0)} MiB written in ${result.seconds.toFixed(1)} s, signed by ${result.signer}; ` +
          `it boots once at the next reboot and becomes the default when healthy\n`,
      );
      if (rest.includes('--reboot')) spawn('systemctl', ['--no-block', 'reboot'], { stdio: 'inherit' });
      return 0;
    }
    case 'commit':
      process.stdout.write(`${await commitBootedSlot(paths)}\n`);
      return 0;
    case 'sign': {
      const [image] = rest;
      const keyFile = option(rest, '--key');
      if (!image || !keyFile) {
        process.stderr.write(USAGE);
        return 2;
      }
      const s = await signImageFile(image, await readFile(keyFile));
      process.stdout.write(`${image}: system partition (${(s.length / 2 ** 20).toFixed(0)} MiB) signed by ${keyFingerprint(s.publicKey)}\n`);
      return 0;
    }
    case 'verify': {
      const [image] = rest;
      const dir = option(rest, '--keys');
      if (!image || !dir) {
        process.stderr.write(USAGE);
        return 2;
      }
      const trusted = await loadTrustedKeys(dir, (m) => process.stderr.write(`${m}\n`));
      const ok = await verifyImageFile(image, trusted).catch((e: Error) => {
        process.stderr.write(`${e.message}\n`);
        return null;
      });
      if (!ok) return 1;
      process.stdout.write(`${image}: signed by ${keyFingerprint(ok.signature.publicKey)} (${ok.key.name}), system partition intact\n`);
      return 0;
    }
    case 'status': {
      const state = await readSlotState(paths);
      const version = (await readFile('/opt/vipshift/VERSION', 'utf8').catch(() => 'unknown')).trim();
      const roles = await roleUnits();
      const time = await timeSync();
      const firmwareKeys = (await loadTrustedKeys(paths.firmwareKeys, () => undefined)).map((k) => ({
        file: k.name,
        fingerprint: keyFingerprint(rawPublicKey(k.key)),
      }));
      const meminfo = await readFile('/proc/meminfo', 'utf8');
      const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
      const memory = { totalBytes: kib('MemTotal'), usedBytes: kib('MemTotal') - kib('MemAvailable') };
      const fs = await statfs('/var/lib/vipshift');
      const data = { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
      if (rest.includes('--json')) {
        process.stdout.write(`${JSON.stringify({ version, ...state, memory, data, roles, time, firmwareKeys })}\n`);
        return 0;
      }
      process.stdout.write(
        `firmware ${version}: booted slot ${state.booted ?? '-'}, default ${state.default}` +
          `${state.trying ? `, trying ${state.trying} at the next boot` : ''}\n`,
      );
      process.stdout.write(
        `time: ${time.unit} ${time.enabled ? 'enabled' : 'NOT enabled'}, ${time.active}, ` +
          `${time.synchronized ? 'synchronized' : 'NOT synchronized'}; servers (${time.source}): ${time.servers.join(' ') || 'none'}\n`,
      );
      for (const k of firmwareKeys) process.stdout.write(`firmware key ${k.fingerprint} (${k.file})\n`);
      if (firmwareKeys.length === 0) process.stdout.write(`firmware keys: none in ${paths.firmwareKeys}: every update is refused\n`);
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
