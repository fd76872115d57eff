/**
 * The appliance configuration: YAML or JSON, validated with zod. Every error
 * names the file, the line and the field, e.g. `lb1.yaml:14: vips[0].mode: expected 'dnat' or 'fullnat'`.
 * JSON is parsed by the YAML parser too (JSON is YAML 1.2), so both keep their line numbers.
 */
import { z } from 'zod';
import { loadConfigFile, parseConfigText, validateConfig, type Locate, type ParseOptions, type RenamedField } from './load.js';
import { VRRP_RENAMES, vrrpConfigSchema } from './vrrp.js';
import { notifySchema } from './hooks.js';
import { METRICS_DEFAULT, metricsListenerSchema } from './metrics.js';
import { checkOverrideSchema, checkSchema } from './check.js';
import { apiUrl, bounded, ipv4, listenAddress, memberName, port, says } from './fields.js';

/** A VIP's name (not a member of the cluster: no key id). */
const name = z
  .string({ error: says('expected a name') })
  .regex(/^[A-Za-z][A-Za-z0-9_-]{0,31}$/, { error: 'expected a name of letters, digits, - and _ (1-32, starting with a letter)' });

/** Weights in 0..256, IPVS's range cut to what a slot table can share out; 0 drains. */
export const MAX_WEIGHT = 256;
/** A VIP's pool has at most this many backends (each keeps ≥ 16 of a Maglev table's 4,093 slots). */
export const MAX_BACKENDS = 256;

const weight = z
  .number({ error: says('expected a weight') })
  .int({ error: 'expected a whole weight' })
  .min(0, { error: `expected a weight in 0..${MAX_WEIGHT} (0 drains)` })
  .max(MAX_WEIGHT, { error: `expected a weight in 0..${MAX_WEIGHT} (0 drains)` });

/**
 * A backend: a server's address and the port its service listens on (default: the port the
 * client asked for on the VIP, so a VIP of several ports maps each to itself). Weight 0
 * drains it: no new connection, live ones stay until they end.
 */
export const backendSchema = z.strictObject({
  address: ipv4,
  port: port.optional(),
  weight: weight.default(1),
  /** Overrides of the VIP's health check for this backend (src/config/check.ts). */
  check: checkOverrideSchema.optional(),
});

/** Where new connections go while every backend is down (instead of a reset). */
const sorryServerSchema = z.strictObject({ address: ipv4, port: port.optional() });

/** The schedulers: weighted round robin, source hash (hash mod pool), Maglev consistent hashing. */
export const SCHEDULERS = ['roundrobin', 'sourcehash', 'maglev'] as const;
export type Scheduler = (typeof SCHEDULERS)[number];

export const vipSchema = z.strictObject({
  name,
  id: z
    .number({ error: says('expected a VIP id (its ct mark)') })
    .int({ error: 'expected a whole id' })
    .min(1, { error: 'expected an id in 1..65535' })
    .max(65535, { error: 'expected an id in 1..65535' }),
  address: ipv4,
  insideAddress: ipv4,
  prefixLength: z
    .number({ error: says('expected a prefix length') })
    .int({ error: 'expected a whole prefix length' })
    .min(1, { error: 'expected a prefix length in 1..32' })
    .max(32, { error: 'expected a prefix length in 1..32' })
    .default(24),
  protocol: z.enum(['tcp', 'udp'], { error: says("expected 'tcp' or 'udp'") }).default('tcp'),
  ports: z.array(port, { error: says('expected a list of ports') }).min(1, { error: 'expected at least one port' }),
  mode: z.enum(['dnat', 'fullnat'], { error: says("expected 'dnat' or 'fullnat'") }),
  backends: z
    .array(backendSchema, { error: says('expected a list of backends') })
    .max(MAX_BACKENDS, { error: `expected at most ${MAX_BACKENDS} backends` }),
  /** Default roundrobin. */
  scheduler: z.enum(SCHEDULERS, { error: says("expected 'roundrobin', 'sourcehash' or 'maglev'") }).optional(),
  sorryServer: sorryServerSchema.optional(),
  /**
   * What happens to a backend's live connections when its check says down: `keep` them (its
   * server may only be slow), or `reset`: their entries are deleted, so each client's next
   * packet is answered with a reset (keepalived's inhibit_on_failure off / IPVS's expire_nodest_conn).
   */
  onDown: z.enum(['keep', 'reset'], { error: says("expected 'keep' or 'reset'") }).default('keep'),
  check: checkSchema.optional(),
  snatPorts: z
    .string({ error: says('expected a port range "first-last"') })
    .regex(/^\d{1,5}-\d{1,5}$/, { error: 'expected a port range "first-last"' })
    .optional(),
  owner: memberName("the owner's appliance name"),
});

/** The keeper on a server (src/keeper): where the copies of that server's connections go. */
const keeperSchema = z.strictObject({
  name: memberName("a keeper's name"),
  /** The server's inside address: connections NAT'd to it are copied to this keeper. */
  server: ipv4,
  api: apiUrl("the keeper's API URL"),
});

/** Table copies pushed to the keepers (src/replication): the patent's embodiment 3. */
const replicationSchema = z.strictObject({
  enabled: z.boolean({ error: 'expected true or false' }).default(true),
  /** A batch leaves at most this long after its first change... */
  batchIntervalMs: bounded('a batch interval', 'ms', 1, 10_000).default(50),
  /** ...or as soon as it holds this many changes. */
  batchEntries: bounded('a batch size', 'entries', 1, 100_000).default(1000),
  /** Changes waiting per keeper; beyond, the backlog is dropped and the keeper resynchronised. */
  backlog: bounded('a backlog', 'entries', 1, 10_000_000).default(200_000),
  /** Every copy is pushed again this often (timeouts, anything missed); 0: never. */
  refreshIntervalSeconds: bounded('a refresh interval', 's', 0, 86_400).default(60),
  /** A push not answered in this time fails (the keeper is taken as unreachable). */
  pushTimeoutMs: bounded('a push timeout', 'ms', 100, 60_000).default(2000),
  /** SO_RCVBUFFORCE of the conntrack event socket; an overflow costs a resynchronisation. */
  receiveBufferBytes: bounded('a receive buffer', 'bytes', 4096, 1 << 30).default(8 << 20),
});

/** Takeover of the VIPs this appliance backs up (docs/replication.md). */
const failoverSchema = z.strictObject({
  /**
   * Back up the VIPs not `normal` here: hold their packets (`migrating`, so a takeover never
   * answers one with a reset) and take a VIP over from the copies when its VRRP instance
   * becomes master here without a migration.
   */
  standby: z.boolean({ error: 'expected true or false' }).default(true),
  /** Per keeper, for a VIP's copies. */
  fetchTimeoutMs: bounded('a fetch timeout', 'ms', 100, 60_000).default(3000),
  /**
   * The other appliances' agents: the only sources a migration's import pulls entries from
   * (the controller names one), and read first on a takeover in case the failed one still
   * answers (patent variants 13/14).
   */
  peers: z.array(z.strictObject({ name: memberName("a peer appliance's name"), api: apiUrl("the peer's agent URL") })).default([]),
  /**
   * How long a peer may take to answer before the takeover goes on without it: a dead peer
   * (a power loss) adds this much to every takeover; 0 asks no peer.
   */
  peerTimeoutMs: bounded('a peer timeout', 'ms', 0, 10_000).default(50),
});

/**
 * Holding up under a SYN flood (src/nat/flood.ts). Defaults are on: a VIP port that sees more
 * SYNs than `synproxy.aboveRate` a second answers them itself with SYN cookies (the kernel's
 * SYNPROXY), so spoofed SYNs never create an entry; new connections are limited per VIP port
 * and per client address.
 */
const synproxySchema = z.strictObject({
  enabled: z.boolean({ error: 'expected true or false' }).default(true),
  /** SYNs a second at one VIP port (with as many again in a burst) before SYNPROXY takes over. */
  aboveRate: bounded('a SYN rate', 'SYN/s', 1, 10_000_000).default(2000),
  /** How long SYNPROXY stays on after the rate fell back below aboveRate. */
  holdSeconds: bounded('a hold time', 's', 1, 3600).default(30),
  /** The TCP options SYNPROXY announces for the servers: only what every server supports. */
  mss: bounded('an MSS', 'bytes', 536, 65495).default(1460),
  wscale: bounded('a window scale', 'shifts', 0, 14).default(7),
  timestamp: z.boolean({ error: 'expected true or false' }).default(true),
  sackPerm: z.boolean({ error: 'expected true or false' }).default(true),
});
const floodSchema = z.strictObject({
  synproxy: synproxySchema.default(synproxySchema.parse({})),
  /** New connections a second per VIP port (as many again in a burst); over it they are dropped and counted. 0: no limit. */
  newConnectionsPerVip: bounded('a rate of new connections', 'connections/s', 0, 10_000_000).default(50_000),
  /** Connections at once from one client address through this appliance; over it new ones are dropped and counted. 0: no limit. */
  connectionsPerSource: bounded('a number of connections', 'connections', 0, 10_000_000).default(20_000),
});

const applianceSchema = z
  .strictObject({
    appliance: memberName("the appliance's name"),
    api: z.strictObject({ listen: listenAddress }),
    interfaces: z.strictObject({
      external: z.string({ error: says('expected an interface name') }).min(1).max(15, { error: 'interface names have at most 15 characters' }),
      internal: z.string({ error: says('expected an interface name') }).min(1).max(15, { error: 'interface names have at most 15 characters' }),
    }),
    hold: z
      .strictObject({
        policy: z.enum(['queue', 'drop'], { error: says("expected 'queue' or 'drop'") }).default('queue'),
        queueLength: z
          .number({ error: says('expected a queue length') })
          .int({ error: 'expected a whole queue length' })
          .min(1, { error: 'expected a queue length in 1..1000000' })
          .max(1_000_000, { error: 'expected a queue length in 1..1000000' })
          .default(4096),
        /** The NFQUEUE number the hold uses in the appliance's namespace. */
        queueNumber: z
          .number({ error: says('expected a queue number') })
          .int({ error: 'expected a whole queue number' })
          .min(0, { error: 'expected a queue number in 0..65535' })
          .max(65535, { error: 'expected a queue number in 0..65535' })
          .default(0),
      })
      .default({ policy: 'queue', queueLength: 4096, queueNumber: 0 }),
    vips: z.array(vipSchema, { error: says('expected a list of VIPs') }),
    keepers: z.array(keeperSchema, { error: says('expected a list of keepers') }).default([]),
    replication: replicationSchema.default(replicationSchema.parse({})),
    failover: failoverSchema.default(failoverSchema.parse({})),
    flood: floodSchema.default(floodSchema.parse({})),
    /**
     * VRRP instances (src/config/vrrp.ts). A VIP whose address is in an instance moves
     * by VRRP: its sync group (or instance) is released on the source and claimed on the
     * target in step 2 of a migration, and failover takes it over when the master is silent.
     */
    vrrp: vrrpConfigSchema.optional(),
    /** Programs run on events (src/config/hooks.ts), as keepalived's notify scripts. */
    notify: notifySchema.default(notifySchema.parse({})),
    /** The listener a stock Prometheus scrapes (src/config/metrics.ts). */
    metrics: metricsListenerSchema.default(METRICS_DEFAULT),
    /** Where the appliance keeps what must outlive its restart: the newest controller epoch it has seen. */
    stateDir: z.string({ error: says('expected a directory') }).min(1, { error: 'expected a directory' }).default('/var/lib/vipshift'),
  })
  .superRefine((config, ctx) => {
    const keeperKeys = new Map<string, number>();
    config.keepers.forEach((k, i) => {
      for (const [key, field] of [
        [`name ${k.name}`, 'name'],
        [`server ${k.server}`, 'server'],
      ] as const) {
        const first = keeperKeys.get(key);
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['keepers', i, field], message: `${key} already used by keepers[${first}]` });
        else keeperKeys.set(key, i);
      }
    });
    checkVipList(config.vips, ctx);
  });

/**
 * The rules a site's VIP list obeys as a whole, wherever it is written (an appliance's
 * configuration, a keeper's): names, ids and addresses unique, ports and backends listed once,
 * at least one backend or a sorry server, a dnat backend serving one VIP, snatPorts exactly
 * for fullnat VIPs. Each problem is an issue at its field (vips[i]...).
 */
export function checkVipList(vips: readonly VipConfig[], ctx: z.RefinementCtx): void {
  const names = new Map<string | number, number>();
  const ids = new Map<string | number, number>();
  const addresses = new Map<string, number>();
  const services = new Map<string, number>();
  const dnatServers = new Map<string, number>();
  vips.forEach((vip, i) => {
    const at = (...rest: (string | number)[]) => ['vips', i, ...rest];
    const dup = (map: Map<string | number, number>, key: string | number, path: (string | number)[], what: string) => {
      const first = map.get(key);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path, message: `${what} already used by vips[${first}]` });
      else map.set(key, i);
    };
    dup(names, vip.name, at('name'), `name '${vip.name}'`);
    dup(ids, vip.id, at('id'), `id ${vip.id}`);
    // A VIP's address and its inside address each belong to one VIP: the hold and the
    // address moves are per VIP.
    dup(addresses, vip.address, at('address'), `address ${vip.address}`);
    dup(addresses, vip.insideAddress, at('insideAddress'), `address ${vip.insideAddress}`);
    const ports = new Set<number>();
    vip.ports.forEach((p, j) => {
      if (ports.has(p)) ctx.addIssue({ code: 'custom', path: at('ports', j), message: `port ${p} is listed twice` });
      ports.add(p);
      dup(services, `${vip.address}/${vip.protocol}/${p}`, at('ports', j), `${vip.protocol} port ${p} of ${vip.address}`);
    });
    if (vip.backends.length === 0 && !vip.sorryServer) ctx.addIssue({ code: 'custom', path: at('backends'), message: 'a VIP has at least one backend (weight 0 drains one) or a sorryServer' });
    const backends = new Map<string, number>();
    vip.backends.forEach((b, j) => {
      const key = backendKey(b);
      const first = backends.get(key);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: at('backends', j, 'address'), message: `backend ${key} already listed as backends[${first}]` });
      else backends.set(key, j);
    });
    if (vip.mode === 'dnat') {
      // A dnat backend routes its replies through its VIP's inside address (its gateway), so
      // it serves one dnat VIP; the hold also recognises its replies by their source.
      const own = new Set<string>();
      for (const [j, b] of vip.backends.entries()) {
        if (own.has(b.address)) continue;
        own.add(b.address);
        dup(dnatServers, b.address, at('backends', j, 'address'), `dnat backend ${b.address}`);
      }
      if (vip.snatPorts !== undefined) ctx.addIssue({ code: 'custom', path: at('snatPorts'), message: 'only fullnat VIPs have snatPorts' });
    } else {
      if (vip.snatPorts === undefined) {
        ctx.addIssue({ code: 'custom', path: at('snatPorts'), message: 'is required for a fullnat VIP (e.g. "20000-29999")' });
      } else {
        const [first, last] = vip.snatPorts.split('-').map(Number) as [number, number];
        if (first < 1 || last > 65535 || first > last) {
          ctx.addIssue({ code: 'custom', path: at('snatPorts'), message: `expected first-last with 1 <= first <= last <= 65535, got "${vip.snatPorts}"` });
        }
      }
    }
  });
}

export type ApplianceConfig = z.infer<typeof applianceSchema>;
/** A configuration as written in a file, before defaults are applied. */
export type ApplianceConfigInput = z.input<typeof applianceSchema>;
export type VipConfig = ApplianceConfig['vips'][number];
export type BackendConfig = VipConfig['backends'][number];

/** `servers` was the name of a VIP's backends before they had ports and states. */
export const VIP_RENAMES: readonly RenamedField[] = [{ at: ['vips', '*'], from: 'servers', to: 'backends' }];

/** Durations before they carried their unit in their names; read under the old names, with a warning. */
export const APPLIANCE_RENAMES: readonly RenamedField[] = [
  ...VIP_RENAMES,
  { at: ['replication'], from: 'batchInterval', to: 'batchIntervalMs' },
  { at: ['replication'], from: 'refreshInterval', to: 'refreshIntervalSeconds' },
  { at: ['replication'], from: 'pushTimeout', to: 'pushTimeoutMs' },
  { at: ['failover'], from: 'fetchTimeout', to: 'fetchTimeoutMs' },
  { at: ['failover'], from: 'peerTimeout', to: 'peerTimeoutMs' },
  { at: ['notify'], from: 'timeout', to: 'timeoutSeconds' },
  ...VRRP_RENAMES,
];

export function parseApplianceConfig(text: string, fileName: string, options: Pick<ParseOptions, 'warn'> = {}): ApplianceConfig {
  return parseConfigText(text, fileName, applianceSchema, { ...options, renamed: APPLIANCE_RENAMES });
}

export function loadApplianceConfig(path: string, options: Pick<ParseOptions, 'warn'> = {}): Promise<ApplianceConfig> {
  return loadConfigFile(path, applianceSchema, { ...options, renamed: APPLIANCE_RENAMES });
}

/** How a backend is named (CLI, API, logs): `ADDRESS` or `ADDRESS:PORT` as configured. */
export function backendKey(b: { address: string; port?: number | undefined }): string {
  return b.port === undefined ? b.address : `${b.address}:${b.port}`;
}

/** The port a backend serves a VIP port on: its own, or the same port. */
export function backendPort(b: { port?: number | undefined }, vipPort: number): number {
  return b.port ?? vipPort;
}

/**
 * The backend of `vip` named by an address and a port: the one configured with that port,
 * else the one without a port (it serves every port of the VIP) when `port` is one of them
 * or not given.
 */
export function findBackend(vip: VipConfig, address: string, port?: number): BackendConfig | undefined {
  const same = vip.backends.filter((b) => b.address === address);
  return (
    same.find((b) => b.port !== undefined && b.port === port) ??
    same.find((b) => b.port === undefined && (port === undefined || vip.ports.includes(port))) ??
    (port === undefined && same.length === 1 ? same[0] : undefined)
  );
}

/**
 * What an appliance warns about at start when its configuration leaves failover weaker than
 * the default: standby turned off, or nowhere to restore connections from.
 */
export function failoverWarnings(config: ApplianceConfig): string[] {
  if (!config.failover.standby) {
    return ["failover.standby is off: this appliance takes over no VIP from the keepers' copies, so a power loss of a VIP's owner resets every one of its connections"];
  }
  if (config.keepers.length === 0 || !config.replication.enabled) {
    return ['failover.standby is on without keepers (or with replication off): a takeover restores only what a peer still answers with'];
  }
  return [];
}

/** An appliance configuration built from another source (keepalived.conf); `locate` names each field's origin. */
export function validateApplianceConfig(value: unknown, locate: Locate): ApplianceConfig {
  return validateConfig(value, applianceSchema, locate);
}

/** The `first-last` of a fullnat VIP's snatPorts. */
export function snatPortRange(vip: VipConfig): [number, number] {
  const [first, last] = (vip.snatPorts ?? '').split('-').map(Number);
  if (first === undefined || last === undefined || Number.isNaN(first) || Number.isNaN(last)) {
    throw new Error(`VIP ${vip.name} has no snatPorts`);
  }
  return [first, last];
}
