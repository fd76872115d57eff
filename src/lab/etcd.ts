/**
 * The lab's etcd members (Debian's etcd-server), one on each controller's host when the site
 * has several controllers: the command line of a member of a fresh cluster. Timings are
 * etcd's defaults (heartbeat 100 ms, election 1 s), which the controllers' 3 s lease is
 * built on.
 */
import path from 'node:path';
import { etcdMembers, type Site } from './site.js';

export const ETCD = '/usr/bin/etcd';

export function etcdCommand(site: Site, member: string): string[] {
  const members = etcdMembers(site);
  const self = members.find((m) => m.name === member);
  if (!self) throw new Error(`lab ${site.name}: '${member}' runs no etcd member`);
  return [
    ETCD,
    `--name=${self.name}`,
    `--data-dir=${path.join(site.stateDir, `etcd-${self.name}`)}`,
    `--listen-client-urls=${self.client}`,
    `--advertise-client-urls=${self.client}`,
    `--listen-peer-urls=${self.peer}`,
    `--initial-advertise-peer-urls=${self.peer}`,
    `--initial-cluster=${members.map((m) => `${m.name}=${m.peer}`).join(',')}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=vipshift-lab-${site.name}`,
    '--log-level=warn',
  ];
}
