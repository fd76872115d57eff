/**
 * Where a migration's time goes, part by part, outside the migration code: the kernel's
 * share of step 3 (create, dump, delete by mark of N entries in a throwaway namespace,
 * with the JavaScript encoder timed alone), one `nft -j -f` batch (what every mode change
 * of steps 1 and 4 spawned before the netlink path), one real mode change via nft and via
 * the engine's nf_tables netlink transaction, and one signed API round trip and one signed stream of N
 * records over loopback (what the controller and the appliances pay per request and for
 * step 3's transfer). Needs root. Prints a table; writes bench/results/migration-profile.json.
 *
 * Environment: ENTRIES (default 100000), ROUNDS (default 5; medians are reported).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Authenticator, createClusterCredentials, loadCredentials } from '../src/api/auth.js';
import { ApiClient } from '../src/api/client.js';
import { createApiServer } from '../src/api/server.js';
import { AGENT_ROLES } from '../src/appliance/agent.js';
import { REPO_ROOT } from '../src/lab/lab.js';
import { run } from '../src/lab/netns.js';
import { Conntrack } from '../src/netlink/conntrack.js';
import { IPS_ASSURED, IPS_SEEN_REPLY, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED } from '../src/netlink/ctnetlink.js';
import { CreateEncoder } from '../src/netlink/entry-record-ctnetlink.js';
import { RECORD_SIZE, encodeStreamHeader, writeRecord } from '../src/netlink/entry-record.js';
import { parseApplianceConfig } from '../src/config/appliance.js';
import { NetlinkElementWriter } from '../src/nat/nft-elements.js';
import { buildModeChange, buildRuleset } from '../src/nat/ruleset.js';

const ENTRIES = Number(process.env.ENTRIES ?? 100_000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const MARK = 1;
const round2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: number[]) => round2([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);

async function timed(work: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  await work();
  return performance.now() - t;
}

function records(n: number): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    const port = i % 2 === 0 ? 7 : 80;
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: `198.51.100.${20 + (i % 230)}`, port: 1024 + Math.floor(i / 230) },
      vip: { address: '203.0.113.10', port },
      server: { address: '198.18.0.101', port },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 432000,
      mark: MARK,
    });
  }
  return b;
}

async function must(program: string, args: string[]): Promise<void> {
  const r = await run(program, args);
  if (r.code !== 0) throw new Error(`${program} ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** Create, dump and delete-by-mark of N entries in a namespace of our own. */
async function kernel(recs: Buffer) {
  const ns = `vtbmgp${randomBytes(3).toString('hex')}`;
  await must('ip', ['netns', 'add', ns]);
  const ct = new Conntrack({ netns: ns });
  const rows: Array<{ create: number; dump: number; count: number; deleteByMark: number }> = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const create = await timed(async () => {
        const r = await ct.createFromRecords(recs);
        if (r.created !== ENTRIES) throw new Error(`created ${r.created} of ${ENTRIES}: ${JSON.stringify(r.failures.slice(0, 3))}`);
      });
      let dumped = 0;
      const dump = await timed(() => ct.dumpRecords(MARK, (c) => (dumped += c.length / RECORD_SIZE)));
      if (dumped !== ENTRIES) throw new Error(`dumped ${dumped} of ${ENTRIES}`);
      const count = await timed(() => ct.count(MARK));
      const deleteByMark = await timed(() => ct.deleteByMark(MARK));
      if ((await ct.count(MARK)) !== 0) throw new Error('entries left after deleteByMark');
      rows.push({ create, dump, count, deleteByMark });
    }
  } finally {
    ct.close();
    await run('ip', ['netns', 'delete', ns]);
  }
  // The JavaScript share of the creates: the encoder alone, same batches as Conntrack's.
  const encoder = new CreateEncoder(1000, false);
  const encode = await timed(() => {
    for (let first = 0; first < ENTRIES; first += 1000) encoder.encode(recs, first, Math.min(1000, ENTRIES - first), 1);
  });
  return {
    create_ms: median(rows.map((r) => r.create)),
    encode_js_ms: round2(encode),
    dump_ms: median(rows.map((r) => r.dump)),
    count_ms: median(rows.map((r) => r.count)),
    delete_by_mark_ms: median(rows.map((r) => r.deleteByMark)),
  };
}

/**
 * Step 3 without the agents: N entries dumped from one namespace straight into creates in
 * another (each dump chunk created as it comes, in order), then deleted by mark at the
 * source, in this one process. The floor of step 3 with this netlink layer, no HTTP.
 */
async function directMove(recs: Buffer) {
  const a = `vtbmga${randomBytes(3).toString('hex')}`;
  const b = `vtbmgb${randomBytes(3).toString('hex')}`;
  await must('ip', ['netns', 'add', a]);
  await must('ip', ['netns', 'add', b]);
  const src = new Conntrack({ netns: a });
  const dst = new Conntrack({ netns: b });
  const rows: number[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      await src.createFromRecords(recs);
      rows.push(
        await timed(async () => {
          let creates = Promise.resolve();
          let failed = 0;
          await src.dumpRecords(MARK, (chunk) => {
            creates = creates.then(async () => {
              failed += (await dst.createFromRecords(chunk)).failures.length;
            });
          });
          await creates;
          if (failed) throw new Error(`${failed} creates failed`);
          await src.deleteByMark(MARK);
        }),
      );
      if ((await dst.count(MARK)) !== ENTRIES || (await src.count(MARK)) !== 0) throw new Error('direct move: wrong counts');
      await dst.deleteByMark(MARK);
    }
  } finally {
    src.close();
    dst.close();
    await run('ip', ['netns', 'delete', a]);
    await run('ip', ['netns', 'delete', b]);
  }
  return { direct_move_ms: median(rows) };
}

/** One nft batch the size of a mode change, in a namespace of our own, minus `ip netns exec` itself. */
async function nftBatch() {
  const ns = `vtbmgn${randomBytes(3).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-bench-nft-'));
  await must('ip', ['netns', 'add', ns]);
  try {
    const t = { family: 'ip', table: 'probe' };
    const set = { ...t, name: 'vips', type: ['ipv4_addr', 'inet_proto', 'inet_service'] };
    const file = (name: string, body: object) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, JSON.stringify(body));
      return f;
    };
    await must('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', file('setup.json', { nftables: [{ add: { table: { family: 'ip', name: t.table } } }, { add: { set } }] })]);
    const elem = (op: 'add' | 'delete') => ({ [op]: { element: { ...t, name: 'vips', elem: [{ concat: ['203.0.113.10', 'tcp', 7] }, { concat: ['203.0.113.10', 'tcp', 80] }] } } });
    const add = file('add.json', { nftables: [elem('add')] });
    const del = file('delete.json', { nftables: [elem('delete')] });
    const base: number[] = [];
    const batch: number[] = [];
    for (let i = 0; i < ROUNDS * 4; i++) {
      base.push(await timed(() => must('ip', ['netns', 'exec', ns, 'true'])));
      batch.push(await timed(() => must('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', i % 2 === 0 ? add : del])));
    }
    return { nft_batch_ms: round2(median(batch) - median(base)), netns_exec_ms: median(base) };
  } finally {
    await run('ip', ['netns', 'delete', ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One real mode change (a dnat VIP with two ports, normal ⇄ migrating: 4 sets, 8 elements) on
 * the appliance's whole ruleset, through `nft -j -f` (minus `ip netns exec`) and through the
 * engine's netlink path (NetlinkElementWriter, socket already open, as in the engine).
 */
async function modeChange() {
  const ns = `vtbmgm${randomBytes(3).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-bench-mode-'));
  await must('ip', ['netns', 'add', ns]);
  const config = parseApplianceConfig(
    JSON.stringify({
      appliance: 'lb1',
      api: { listen: '192.0.2.11:8441' },
      interfaces: { external: 'ext0', internal: 'int0' },
      vips: [{ name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', backends: [{ address: '198.18.0.101' }], owner: 'lb1' }],
    }),
    'bench.json',
  );
  const vip = config.vips[0]!;
  const writer = new NetlinkElementWriter({ netns: ns });
  try {
    const file = (name: string, body: object) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, JSON.stringify(body));
      return f;
    };
    await must('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', file('ruleset.json', buildRuleset(config, new Map([['vip1', 'normal']]), { hold: 'drop', queueNumber: 1 }))]);
    const toMigrating = buildModeChange(vip, 'normal', 'migrating');
    const toNormal = buildModeChange(vip, 'migrating', 'normal');
    const files = [file('to-migrating.json', toMigrating), file('to-normal.json', toNormal)];
    const base: number[] = [];
    const viaNft: number[] = [];
    for (let i = 0; i < ROUNDS * 4; i++) {
      base.push(await timed(() => must('ip', ['netns', 'exec', ns, 'true'])));
      viaNft.push(await timed(() => must('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', files[i % 2]!])));
    }
    await writer.apply(toMigrating); // opens the socket, as the engine's first change does
    await writer.apply(toNormal);
    const viaNetlink: number[] = [];
    for (let i = 0; i < ROUNDS * 4; i++) viaNetlink.push(await timed(() => writer.apply(i % 2 === 0 ? toMigrating : toNormal)));
    return { mode_change_nft_ms: round2(median(viaNft) - median(base)), mode_change_netlink_ms: median(viaNetlink) };
  } finally {
    writer.close();
    await run('ip', ['netns', 'delete', ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A signed POST round trip and a signed stream of N records, server and client in this process over loopback. */
async function api(recs: Buffer) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-bench-api-'));
  createClusterCredentials(dir, { lb1: 'appliance', lb2: 'appliance', ctl: 'controller' });
  const server = createApiServer({
    name: 'agent',
    authenticator: new Authenticator(loadCredentials(dir, 'lb1')),
    routes: [
      { method: 'POST', path: '/v1/vips/:name/prepare', handler: () => ({ ok: true }) },
      {
        method: 'GET',
        path: '/v1/vips/:name/entries',
        handler: (ctx) => {
          // As the agent writes a dump: the header, then chunks of 1,000 records.
          const out = new PassThrough();
          out.write(encodeStreamHeader());
          for (let o = 0; o < recs.length; o += 1000 * RECORD_SIZE) out.write(recs.subarray(o, o + 1000 * RECORD_SIZE));
          out.end();
          return ctx.stream(out, { contentType: 'application/octet-stream' });
        },
      },
    ],
    // The agent's own lines for these two routes: the steps are the controller's, the entries another appliance's.
    roles: { 'POST /v1/vips/:name/prepare': AGENT_ROLES['POST /v1/vips/:name/prepare']!, 'GET /v1/vips/:name/entries': AGENT_ROLES['GET /v1/vips/:name/entries']! },
    logger: (await import('pino')).pino({ level: 'silent' }),
  });
  await server.listen({ host: '127.0.0.1', port: 0 });
  const client = new ApiClient(server.url, loadCredentials(dir, 'ctl'), { peer: 'lb1' });
  const target = new ApiClient(server.url, loadCredentials(dir, 'lb2'), { peer: 'lb1' });
  try {
    await client.post('/v1/vips/vip1/prepare', {});
    const post: number[] = [];
    for (let i = 0; i < ROUNDS * 20; i++) post.push(await timed(() => client.post('/v1/vips/vip1/prepare', {})));
    const stream: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      stream.push(
        await timed(async () => {
          let bytes = 0;
          for await (const piece of await target.stream('GET', '/v1/vips/vip1/entries')) bytes += (piece as Buffer).length;
          if (bytes !== recs.length + 8) throw new Error(`stream carried ${bytes} bytes, expected ${recs.length + 8}`);
        }),
      );
    }
    return { signed_post_ms: median(post), signed_stream_ms: median(stream) };
  } finally {
    client.close();
    target.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const recs = records(ENTRIES);
const load = os.loadavg()[0]!;
const k = await kernel(recs);
const d = await directMove(recs);
const n = await nftBatch();
const m = await modeChange();
const a = await api(recs);
const result = { entries: ENTRIES, rounds: ROUNDS, ...k, ...d, ...n, ...m, ...a, load_avg_1m: round2(load) };

for (const [key, value] of Object.entries(result)) console.log(`${key.padEnd(20)} ${String(value).padStart(10)}`);
const out = path.join(REPO_ROOT, 'bench', 'results', 'migration-profile.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ bench: 'migration-profile', date: new Date().toISOString(), kernel: os.release(), cores: os.cpus().length, ...result }, null, 2) + '\n');
console.log(`wrote ${path.relative(REPO_ROOT, out)}`);
