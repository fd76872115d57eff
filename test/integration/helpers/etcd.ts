/**
 * A real etcd cluster on loopback for tests of the controller's etcd store: N members of
 * Debian's etcd-server on random ports, data in a temporary directory, always removed. With
 * `tls`, the members speak TLS to clients and peers and ask each for a certificate of the CA
 * minted there (src/api/etcd-pki.ts, as `vipshift pki etcd` does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createEtcdPki, etcdMemberFiles } from '../../../src/api/etcd-pki.js';
import { ETCD } from '../../../src/lab/etcd.js';

export interface TestEtcd {
  endpoints: string[];
  /** SIGKILLs member i. */
  kill(i: number): Promise<void>;
  stop(): Promise<void>;
}

const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
    s.on('error', () => resolve(false));
  });

export async function startEtcd(members: number, options: { tls?: { dir: string; clients: string[] } } = {}): Promise<TestEtcd> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vipshift-etcd-'));
  const base = 20000 + Math.floor(Math.random() * 20000);
  const m = Array.from({ length: members }, (_, i) => ({ name: `e${i}`, client: base + 2 * i, peer: base + 2 * i + 1 }));
  const { tls } = options;
  const scheme = tls ? 'https' : 'http';
  if (tls) await createEtcdPki(tls.dir, { members: m.map((x) => ({ name: x.name, hosts: ['127.0.0.1'] })), clients: tls.clients }, true);
  const tlsFlags = (name: string) => {
    if (!tls) return [];
    const f = etcdMemberFiles(tls.dir, name);
    return [`--cert-file=${f.cert}`, `--key-file=${f.key}`, `--trusted-ca-file=${f.ca}`, '--client-cert-auth', `--peer-cert-file=${f.cert}`, `--peer-key-file=${f.key}`, `--peer-trusted-ca-file=${f.ca}`, '--peer-client-cert-auth'];
  };
  const cluster = m.map((x) => `${x.name}=${scheme}://127.0.0.1:${x.peer}`).join(',');
  const children: ChildProcess[] = m.map((x) =>
    spawn(ETCD, [
      `--name=${x.name}`,
      `--data-dir=${path.join(dir, x.name)}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${x.client}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${x.client}`,
      `--listen-peer-urls=${scheme}://127.0.0.1:${x.peer}`,
      `--initial-advertise-peer-urls=${scheme}://127.0.0.1:${x.peer}`,
      `--initial-cluster=${cluster}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=t${base}`,
      ...tlsFlags(x.name),
      '--log-level=error',
    ], { stdio: 'ignore' }),
  );
  const exited = children.map((c) => new Promise<void>((r) => c.once('exit', () => r())));
  const stop = async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(exited);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (const x of m) {
    while (!(await portOpen(x.client))) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`etcd member ${x.name} did not listen on ${x.client}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    endpoints: m.map((x) => `${scheme}://127.0.0.1:${x.client}`),
    async kill(i) {
      children[i]!.kill('SIGKILL');
      await exited[i];
    },
    stop,
  };
}
