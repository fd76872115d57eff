/**
 * The keeper's configuration (YAML or JSON; errors name file, line and field):
 *
 *   keeper: srv1                       # its identity: key id in the cluster's PKI
 *   api: { listen: "192.0.2.21:8442" }
 *   database: /var/lib/vipshift/keeper.sqlite
 *   pki: /var/lib/vipshift/cluster     # holds srv1.key and peers.json (vipshift pki init)
 *   sockdiag: true                     # variant 1: rebuild dnat entries from this server's sockets
 *   addresses: [198.18.0.101]          # this server's addresses (default: its interfaces')
 *   vips: [...]                        # the site's VIPs, as in the appliance configuration
 *
 * `vips` lets an operator or an appliance name a VIP (`/v1/vips/vip1/copies`), gives the
 * socket-table rebuild what the server cannot see: the VIP's address, ports and mark, and
 * bounds what is stored: copies of other VIPs, or that break a VIP's rules
 * (config/vip-records.ts), are refused. The controller's backend changes are written into
 * the file (config/edit.ts), so it stays the keeper's last copy of the site's VIPs.
 */
import { z } from 'zod';
import { loadConfigFile, parseConfigText, type RenamedField } from './load.js';
import { ConfigFile } from './edit.js';
import { VIP_RENAMES, checkVipList, vipSchema } from './appliance.js';
import { bounded, listenAddress, memberName } from './fields.js';
import { DEFAULT_CREDENTIALS_DIR } from '../api/auth.js';
import { METRICS_DEFAULT, metricsListenerSchema } from './metrics.js';

const keeperSchema = z
  .strictObject({
    keeper: memberName("the keeper's name"),
    api: z.strictObject({ listen: listenAddress }),
    database: z.string({ error: 'expected the path of the SQLite database' }).min(1, { error: 'expected the path of the SQLite database' }),
    pki: z.string({ error: 'expected the directory of the cluster credentials' }).min(1).default(DEFAULT_CREDENTIALS_DIR),
    sockdiag: z.boolean({ error: 'expected true or false' }).default(false),
    /** Between sweeps of expired copies. */
    expiryIntervalSeconds: bounded('a sweep interval', 's', 1, 3600).default(30),
    vips: z.array(vipSchema, { error: 'expected a list of VIPs' }).default([]),
    /** The listener a stock Prometheus scrapes (src/config/metrics.ts). */
    metrics: metricsListenerSchema.default(METRICS_DEFAULT),
    /**
     * This server's addresses: the keeper stores copies of connections to them only (a copy
     * names the connection's server). Default: the IPv4 addresses of this host's interfaces.
     */
    addresses: z.array(z.ipv4({ error: 'expected an IPv4 address (a.b.c.d)' }), { error: 'expected a list of addresses' }).min(1, { error: 'expected at least one address' }).optional(),
  })
  // The same rules for the VIP list as in the appliance's configuration: it is the same list.
  .superRefine((config, ctx) => checkVipList(config.vips, ctx));

export type KeeperConfig = z.infer<typeof keeperSchema>;

/** The sweep interval before it carried its unit in its name. */
const KEEPER_RENAMES: readonly RenamedField[] = [...VIP_RENAMES, { at: [], from: 'expiryInterval', to: 'expiryIntervalSeconds' }];

export function parseKeeperConfig(text: string, fileName: string): KeeperConfig {
  return parseConfigText(text, fileName, keeperSchema, { renamed: KEEPER_RENAMES });
}

export function loadKeeperConfig(path: string): Promise<KeeperConfig> {
  return loadConfigFile(path, keeperSchema, { renamed: KEEPER_RENAMES });
}

/** The keeper's configuration file: backend changes from the controller are written there. */
export class KeeperConfigFile extends ConfigFile<KeeperConfig> {
  constructor(path: string) {
    super(path, parseKeeperConfig);
  }
}
