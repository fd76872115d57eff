import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { REBUILD_STATUS, REBUILD_TIMEOUT, RebuildError, rebuildRecords } from '../../src/keeper/rebuild.js';
import type { VipConfig } from '../../src/config/appliance.js';
import { IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord } from '../../src/netlink/entry-record.js';
import { NLM_F_DUMP, NLM_F_REQUEST, NetlinkParseError, parseMessages } from '../../src/netlink/message.js';
import {
  INET_DIAG_BC_JMP,
  INET_DIAG_BC_S_EQ,
  INET_DIAG_INFO,
  INET_DIAG_MSG_LEN,
  SOCK_DIAG_BY_FAMILY,
  TCPI_OPT_SACK,
  TCPI_OPT_TIMESTAMPS,
  TCPI_OPT_WSCALE,
  TCP_ESTABLISHED,
  TCP_LISTEN,
  decodeInetDiagMessage,
  decodeInetDiagRequest,
  encodeInetDiagMessage,
  encodeInetDiagRequest,
  inetDiagExt,
  localPortsBytecode,
  tcpStateBit,
  type DiagSocket,
} from '../../src/netlink/sockdiag.js';

function sock(overrides: Partial<DiagSocket> = {}): DiagSocket {
  return {
    family: 2,
    state: TCP_ESTABLISHED,
    timer: 0,
    retrans: 0,
    src: '198.18.0.101',
    sport: 80,
    dst: '198.51.100.10',
    dport: 40000,
    interface: 0,
    cookie: '1a2b',
    expires: 0,
    rqueue: 0,
    wqueue: 0,
    uid: 0,
    inode: 4242,
    tcpInfo: { state: TCP_ESTABLISHED, options: TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE, sndWscale: 7, rcvWscale: 10, rttUs: 250 },
    mark: 0,
    ...overrides,
  };
}

/** The kernel's inet_diag_bc_run (net/ipv4/inet_diag.c), for S_EQ and JMP: accept iff it lands on the end. */
function runBytecode(bc: Buffer, sport: number): boolean {
  let len = bc.length;
  let o = 0;
  while (len > 0) {
    const code = bc[o]!;
    let yes = true;
    if (code === INET_DIAG_BC_JMP) yes = false;
    else if (code === INET_DIAG_BC_S_EQ) yes = sport === bc.readUInt16LE(o + 6);
    else throw new Error(`op ${code}`);
    const step = yes ? bc[o + 1]! : bc.readUInt16LE(o + 2);
    len -= step;
    o += step;
  }
  return len === 0;
}

describe('sock_diag codec', () => {
  it('builds a dump request with the state filter, tcp_info and a local-port program', () => {
    const buf = encodeInetDiagRequest({ family: 2, protocol: 6, ext: inetDiagExt(INET_DIAG_INFO), states: tcpStateBit(TCP_ESTABLISHED), localPorts: [7, 80, 443] }, 77);
    const [msg] = parseMessages(buf);
    expect(msg).toMatchObject({ type: SOCK_DIAG_BY_FAMILY, flags: NLM_F_REQUEST | NLM_F_DUMP, seq: 77 });
    expect(decodeInetDiagRequest(msg!)).toEqual({ family: 2, protocol: 6, ext: 2, states: 2, localPorts: [7, 80, 443] });
    // The cookie of "any socket" is all ones.
    expect(msg!.payload.subarray(8 + 40, 8 + 48).equals(Buffer.alloc(8, 0xff))).toBe(true);
  });

  it('the port program accepts exactly the listed ports, as the kernel runs it', () => {
    for (const ports of [[80], [7, 80], [1, 2, 3, 65535], Array.from({ length: 20 }, (_, i) => 1000 + 3 * i)]) {
      const bc = localPortsBytecode(ports);
      for (const p of [0, 1, 2, 3, 7, 8, 79, 80, 81, 1000, 1003, 1057, 1058, 65535]) expect(runBytecode(bc, p)).toBe(ports.includes(p));
    }
  });

  it('round-trips socket messages', () => {
    for (const s of [sock(), sock({ tcpInfo: undefined, mark: undefined, cookie: 'ffffffff00000001', state: TCP_LISTEN, dst: '0.0.0.0', dport: 0 })]) {
      const clean = JSON.parse(JSON.stringify(s)) as DiagSocket;
      expect(decodeInetDiagMessage(encodeInetDiagMessage(s))).toEqual(clean);
    }
    for (let i = 0; i < 200; i++) {
      const b = randomBytes(40);
      const s = sock({
        state: b[0]! % 13,
        src: `${b[1]}.${b[2]}.${b[3]}.${b[4]}`,
        sport: b.readUInt16LE(5),
        dst: `${b[7]}.${b[8]}.${b[9]}.${b[10]}`,
        dport: b.readUInt16LE(11),
        cookie: b.readBigUInt64LE(13).toString(16),
        inode: b.readUInt32LE(21),
        tcpInfo: { state: b[25]! % 13, options: b[26]! & 15, sndWscale: b[27]! & 15, rcvWscale: b[28]! & 15, rttUs: b.readUInt32LE(29) },
        mark: b.readUInt32LE(33),
      });
      expect(decodeInetDiagMessage(encodeInetDiagMessage(s))).toEqual(s);
    }
  });

  it('fuzz: random and truncated messages decode or throw NetlinkParseError, nothing else', () => {
    const good = encodeInetDiagMessage(sock());
    let parsed = 0;
    for (let i = 0; i < 5000; i++) {
      let b: Buffer;
      if (i % 3 === 0) b = randomBytes(Math.floor(Math.random() * 200));
      else if (i % 3 === 1) b = good.subarray(0, Math.floor(Math.random() * good.length));
      else {
        b = Buffer.from(good);
        for (let k = 0; k < 4; k++) b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
      }
      try {
        decodeInetDiagMessage(b);
        parsed++;
      } catch (e) {
        expect(e).toBeInstanceOf(NetlinkParseError);
      }
    }
    expect(parsed).toBeGreaterThan(0);
    expect(() => decodeInetDiagMessage(good.subarray(0, INET_DIAG_MSG_LEN - 1))).toThrow(NetlinkParseError);
  });
});

const vip1: VipConfig = {
  name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', prefixLength: 24, protocol: 'tcp', ports: [7, 80],
  mode: 'dnat', backends: [{ address: '198.18.0.101', weight: 1 }], onDown: 'keep', owner: 'lb1',
};
const notClients = { insideAddresses: new Set(['198.18.0.10', '198.18.0.13']), networks: ['127.0.0.1/8', '198.18.0.101/24'] };

describe('rebuild from the socket table', () => {
  it('makes one ESTABLISHED dnat record per client connection of the VIP', () => {
    const sockets = [
      sock(),
      sock({ sport: 7, dport: 40001, tcpInfo: { state: 1, options: 0, sndWscale: 0, rcvWscale: 0, rttUs: 1 } }),
      sock({ dst: '198.18.0.13', dport: 20000 }), // fullnat: from vip4's inside address
      sock({ dst: '198.18.0.2', dport: 41000 }), // an appliance's health check, from the server's own network
      sock({ sport: 22 }), // not a VIP port
      sock({ src: '192.0.2.21' }), // the management address
      sock({ state: TCP_LISTEN, dst: '0.0.0.0', dport: 0 }),
      sock({ dport: 40002, tcpInfo: undefined }),
    ];
    const out = rebuildRecords(vip1, sockets, notClients, new Set(['198.51.100.10:40002:80']));
    expect(out.length).toBe(2 * RECORD_SIZE);
    const flags = IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM;
    expect(readRecord(out, 0)).toEqual({
      client: { address: '198.51.100.10', port: 40000 },
      vip: { address: '203.0.113.10', port: 80 },
      server: { address: '198.18.0.101', port: 80 },
      proto: 6,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 10, flagsOriginal: flags, flagsReply: flags },
      status: REBUILD_STATUS,
      timeout: REBUILD_TIMEOUT,
      mark: 1,
    });
    expect(readRecord(out, RECORD_SIZE)).toMatchObject({ client: { port: 40001 }, vip: { port: 7 }, tcpWindow: { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 } });
  });

  it('refuses a fullnat VIP', () => {
    expect(() => rebuildRecords({ ...vip1, mode: 'fullnat', snatPorts: '20000-29999' }, [sock()], notClients)).toThrow(RebuildError);
  });
});
