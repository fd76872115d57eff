/**
 * The `vrrp:` section of a vipshift configuration (YAML or JSON), validated with zod. Names
 * follow keepalived's keywords so that the keepalived.conf importer maps one to one:
 * vrrp_instance → instances[], virtual_router_id → vrid, advert_int → advertIntervalSeconds
 * (fractions allowed), vrrp_version → version, virtual_ipaddress → addresses, unicast_peer → unicastPeers,
 * track_interface → trackInterfaces, vrrp_sync_group → syncGroups.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, parseConfigText, validateConfig, type RenamedField } from './load.js';

const name = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'a name of 1-64 letters, digits, _ . : -');
const ifname = z.string().regex(/^[^\s/]{1,15}$/, 'an interface name (1-15 characters, no space or /)');
const cidr = z
  .union([z.cidrv4(), z.ipv4()], { error: 'an IPv4 address with optional /prefix, e.g. 203.0.113.10/24' })
  .transform((a) => (a.includes('/') ? a : `${a}/32`));

/** A virtual address: "203.0.113.10/24", or with the interface it goes on (keepalived's `dev`). */
const virtualAddress = z
  .union([cidr, z.strictObject({ address: cidr, dev: ifname.optional() })])
  .transform((a) => (typeof a === 'string' ? { address: a } : a));

const wholeCentiseconds = (s: number): boolean => Math.abs(Math.round(s * 100) - s * 100) < 1e-6;

export const vrrpInstanceSchema = z.strictObject({
  name,
  interface: ifname,
  vrid: z.number().int().min(1).max(255),
  /** 255 = address owner (RFC 5798 §5.2.4); 0 is reserved for release. */
  priority: z.number().int().min(1).max(255).default(100),
  /**
   * keepalived's vrrp_version: 3 (RFC 5798) or 2 (RFC 3768, keepalived's own default; what a
   * keepalived peer speaks unless told `vrrp_version 3`). Both sides of a VRID must agree.
   */
  version: z.union([z.literal(2), z.literal(3)], { error: 'expected 2 or 3 (keepalived\'s vrrp_version)' }).default(3),
  /**
   * Seconds: 0.01..40.95 in VRRPv3 (the 12-bit centisecond field of RFC 5798 §5.2.7), whole
   * seconds 1..255 in VRRPv2 (RFC 3768 §5.3.7).
   */
  advertIntervalSeconds: z
    .number()
    .min(0.01, { abort: true })
    .max(255, { abort: true })
    .refine(wholeCentiseconds, 'must be a whole number of centiseconds (RFC 5798 §5.2.7)')
    .default(1),
  preempt: z.boolean().default(true),
  /** Seconds a higher-priority backup waits before preempting a lower-priority master. */
  preemptDelaySeconds: z.number().min(0).max(1000).default(0),
  addresses: z.array(virtualAddress).min(1).max(255),
  /** keepalived's unicast_peer: adverts go to these addresses instead of 224.0.0.18. */
  unicastPeers: z.array(z.ipv4()).default([]),
  /** keepalived's unicast_src_ip; default the interface's primary address. */
  unicastSource: z.ipv4().optional(),
  /**
   * keepalived's use_vmac: the virtual addresses go on a macvlan interface with the virtual
   * router MAC 00-00-5E-00-01-{VRID} (RFC 5798 §7.3), so adverts, gratuitous ARPs and ARP
   * replies carry it; `true` names it `vrrp.{VRID}` as keepalived does, a string names it.
   * Off: the interface's own MAC answers for them (keepalived's default).
   */
  useVmac: z.union([z.boolean(), ifname]).default(false),
  /** RFC 5798 Accept_Mode. */
  accept: z.boolean().default(false),
  trackInterfaces: z.array(ifname).default([]),
  /** keepalived's garp_master_repeat and garp_interval (seconds). */
  garpRepeat: z.number().int().min(1).max(100).default(5),
  /**
   * Seconds the instance stays in Initialize after start (keepalived's vrrp_startup_delay,
   * per instance): a backup that must not win a cold-start race against the VIP's owner.
   */
  startupDelaySeconds: z.number().min(0).max(3600).default(0),
  garpIntervalSeconds: z.number().min(0).max(10).default(0),
  /**
   * BFD to the master (RFC 5880/5881, src/vrrp/bfd-session.ts): when present, the backup
   * also watches the master by BFD and takes over once BFD says it is down and its adverts
   * have stopped, well before Master_Down_Interval. Milliseconds; absent: off.
   */
  bfd: z
    .strictObject({
      /** bfd.DesiredMinTxInterval once Up. Timers below 10 ms are beyond a JavaScript event loop. */
      minTxMs: z.number().int().min(10).max(60_000).default(50),
      /** bfd.RequiredMinRxInterval. */
      minRxMs: z.number().int().min(10).max(60_000).default(50),
      /** bfd.DetectMult. */
      multiplier: z.number().int().min(1).max(255).default(3),
    })
    .optional(),
});

export const vrrpSyncGroupSchema = z.strictObject({
  name,
  instances: z.array(name).min(1),
});

export const vrrpConfigSchema = z
  .strictObject(
    {
      instances: z.array(vrrpInstanceSchema).default([]),
      syncGroups: z.array(vrrpSyncGroupSchema).default([]),
    },
    { error: (issue) => (issue.input === undefined ? "is required (the file has no 'vrrp' section)" : 'expected a section { instances, syncGroups }') },
  )
  .superRefine((c, ctx) => {
    const names = new Map<string, number>();
    const vrids = new Map<string, number>();
    const vmacs = new Map<string, number>();
    c.instances.forEach((inst, i) => {
      if (inst.version === 3 && inst.advertIntervalSeconds > 40.95) {
        ctx.addIssue({ code: 'custom', path: ['instances', i, 'advertIntervalSeconds'], message: 'at most 40.95 seconds in VRRPv3 (RFC 5798 §5.2.7)' });
      }
      if (inst.version === 2 && !Number.isInteger(inst.advertIntervalSeconds)) {
        ctx.addIssue({ code: 'custom', path: ['instances', i, 'advertIntervalSeconds'], message: 'whole seconds (1..255) in VRRPv2 (RFC 3768 §5.3.7)' });
      }
      if (names.has(inst.name)) {
        ctx.addIssue({ code: 'custom', path: ['instances', i, 'name'], message: `duplicate instance name '${inst.name}'` });
      }
      names.set(inst.name, i);
      const vmac = vmacName(inst);
      if (vmac !== undefined) {
        if (vmacs.has(vmac)) ctx.addIssue({ code: 'custom', path: ['instances', i, 'useVmac'], message: `virtual MAC interface ${vmac} already used by instance #${vmacs.get(vmac)}: name it (useVmac: NAME)` });
        else vmacs.set(vmac, i);
      }
      const key = `${inst.interface}/${inst.vrid}`;
      if (vrids.has(key)) {
        ctx.addIssue({ code: 'custom', path: ['instances', i, 'vrid'], message: `VRID ${inst.vrid} already used on ${inst.interface} by instance #${vrids.get(key)}` });
      }
      vrids.set(key, i);
    });
    // One BFD session per (interface, peer) serves every instance on the interface: one set of timers.
    const bfdOn = new Map<string, { index: number; timers: string }>();
    c.instances.forEach((inst, i) => {
      if (!inst.bfd) return;
      const timers = `${inst.bfd.minTxMs}/${inst.bfd.minRxMs}/${inst.bfd.multiplier}`;
      const first = bfdOn.get(inst.interface);
      if (!first) bfdOn.set(inst.interface, { index: i, timers });
      else if (first.timers !== timers) {
        ctx.addIssue({
          code: 'custom',
          path: ['instances', i, 'bfd'],
          message: `BFD timers ${timers} (minTxMs/minRxMs/multiplier) differ from instance #${first.index}'s ${first.timers} on ${inst.interface}: its instances share one BFD session per peer`,
        });
      }
    });
    const grouped = new Map<string, string>();
    c.syncGroups.forEach((g, gi) => {
      g.instances.forEach((member, mi) => {
        if (!names.has(member)) {
          ctx.addIssue({ code: 'custom', path: ['syncGroups', gi, 'instances', mi], message: `no instance named '${member}'` });
        } else if (grouped.has(member)) {
          ctx.addIssue({ code: 'custom', path: ['syncGroups', gi, 'instances', mi], message: `'${member}' is already in sync group '${grouped.get(member)}'` });
        }
        grouped.set(member, g.name);
      });
    });
  });

/** The virtual-MAC interface of an instance with useVmac, as keepalived names it by default. */
export function vmacName(inst: { vrid: number; useVmac: boolean | string }): string | undefined {
  if (inst.useVmac === false) return undefined;
  return inst.useVmac === true ? `vrrp.${inst.vrid}` : inst.useVmac;
}

export type VrrpConfig = z.output<typeof vrrpConfigSchema>;
export type VrrpInstanceConfig = z.output<typeof vrrpInstanceSchema>;
export type VrrpSyncGroupConfig = z.output<typeof vrrpSyncGroupSchema>;
/** What a configuration file may say (defaults omitted): what the keepalived importer emits. */
export type VrrpConfigInput = z.input<typeof vrrpConfigSchema>;

/** The instance's times before they carried their unit in their names (read with a warning). */
export const VRRP_RENAMES: readonly RenamedField[] = [
  { at: ['vrrp', 'instances', '*'], from: 'advertInterval', to: 'advertIntervalSeconds' },
  { at: ['vrrp', 'instances', '*'], from: 'preemptDelay', to: 'preemptDelaySeconds' },
  { at: ['vrrp', 'instances', '*'], from: 'startupDelay', to: 'startupDelaySeconds' },
  { at: ['vrrp', 'instances', '*'], from: 'garpInterval', to: 'garpIntervalSeconds' },
];

/** A file that has a `vrrp:` section (an appliance's configuration, or a speaker's alone). */
const vrrpFileSchema = z.object({ vrrp: vrrpConfigSchema });

/** Validates an already parsed `vrrp` section; throws ConfigError naming `file` and the field. */
export function parseVrrpConfig(section: unknown, file = 'vrrp section'): VrrpConfig {
  return validateConfig({ vrrp: section ?? {} }, vrrpFileSchema, () => ({ file })).vrrp;
}

/** Reads the `vrrp:` section of a YAML or JSON file through the one loader (ConfigError with file:line:field). */
export function loadVrrpConfigFile(file: string): VrrpConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
  return parseConfigText(text, file, vrrpFileSchema, { renamed: VRRP_RENAMES }).vrrp;
}
