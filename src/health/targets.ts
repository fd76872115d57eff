/**
 * The backends an appliance checks: every backend of every VIP in its configuration (those
 * it owns, and those it stands by for or may receive: a takeover or a migration then starts
 * with the right pool). A backend is checked on its own port; one without a port serves
 * every port of its VIP and is checked on the first. A backend of weight 0 is checked too,
 * so its state is known the moment it is given weight again.
 */
import type { BackendConfig, VipConfig } from '../config/appliance.js';
import { resolveCheck } from '../config/check.js';
import type { HealthTarget } from './monitor.js';

/** The port a backend is known by to its checks and its pool changes. */
export function targetPort(vip: Pick<VipConfig, 'ports'>, backend: Pick<BackendConfig, 'port'>): number {
  return backend.port ?? vip.ports[0]!;
}

export function healthTargets(vips: readonly VipConfig[]): HealthTarget[] {
  return vips.flatMap((vip) =>
    vip.backends.map((b) => ({ vip: vip.name, address: b.address, port: targetPort(vip, b), check: resolveCheck(vip.check, b.check) })),
  );
}
