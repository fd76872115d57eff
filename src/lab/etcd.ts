/**
 * The lab's etcd members (Debian's etcd-server), one on each controller's host when the site
 * has several controllers: the command line of a member of a fresh cluster. Timings are
 * etcd's defaults (heartbeat 100 ms, election 1 s), which the controllers' 3 s lease is
 * built on. Clients and peers speak TLS and must show a certificate of the lab's etcd CA
 * (minted by `lab up` as `vipshift pki etcd` does).
 */
import path from 'node:path';
import { createEtcdPki, etcdMemberFiles } from '../api/etcd-pki.js';
import { etcdMembers, pkiDir, type Site } from './site.js';

export const ETCD = '/usr/bin/etcd';

export function etcdCommand(site: Site, member: string): string[] {
  const members = etcdMembers(site);
  const self = members.find((m) => m.name === member);
  if (!self) throw new Error(`lab ${site.name}: '${member}' runs no etcd member`);
  const tls = etcdMemberFiles(pkiDir(site), self.name);
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
    `--cert-file=${tls.cert}`,
    `--key-file=${tls.key}`,
    `--trusted-ca-file=${tls.ca}`,
    '--client-cert-auth',
    `--peer-cert-file=${tls.cert}`,
    `--peer-key-file=${tls.key}`,
    `--peer-trusted-ca-file=${tls.ca}`,
    '--peer-client-cert-auth',
    // A member back from a partition asks before it campaigns, instead of forcing an election
    // with its higher term (which stalls every lease keep-alive and deposes a sound leader).
    '--pre-vote',
    '--log-level=warn',
  ];
}

/** The CA, a certificate per member (its management address) and one per controller, anew. */
export function createLabEtcdPki(site: Site): Promise<string[]> {
  const members = etcdMembers(site);
  return createEtcdPki(pkiDir(site), { members: members.map((m) => ({ name: m.name, hosts: [m.address] })), clients: members.map((m) => m.name) }, true);
}
