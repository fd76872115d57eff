/**
 * Mode and pool changes straight to the kernel: the element commands of a mode-change or
 * pool-change batch (buildModeChange, buildPoolChange, nft JSON) become one nf_tables netlink
 * transaction sent from this process, instead of a spawn of `nft` per change (which parses
 * its JSON: ~1 s for a reload of 100 Maglev pools). The JSON stays the one description of
 * which elements a mode or a pool has; this module only translates it, and refuses what it
 * does not know.
 */
import {
  NFT_GOTO,
  NFT_JUMP,
  encodeSetElementBatch,
  ipv4Field,
  markValue,
  protoField,
  serviceField,
  splitSetElementChanges,
  type SetElement,
  type SetElementChange,
} from '../netlink/nftables.js';
import { NETLINK_NETFILTER } from '../netlink/message.js';
import { NetlinkError, NetlinkSocket } from '../netlink/socket.js';
import { elementSet, type ModeSet, type ModeSetField } from './ruleset.js';
import { type NftBatch } from '../kernel/nft.js';

/** Applies a batch of element commands atomically (the engine's mode and pool changes). */
export interface ElementWriter {
  apply(batch: NftBatch): Promise<void>;
  close?(): void;
}

const PROTOCOLS: Readonly<Record<string, number>> = { tcp: 6, udp: 17 };

function field(type: ModeSetField, value: unknown, set: string): Buffer {
  const bad = (): Error => new Error(`set ${set}: ${JSON.stringify(value)} is not ${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`);
  switch (type) {
    case 'ipv4_addr':
      if (typeof value !== 'string') throw bad();
      try {
        return ipv4Field(value);
      } catch {
        throw bad();
      }
    case 'inet_proto': {
      const proto = typeof value === 'string' ? PROTOCOLS[value] : value;
      if (typeof proto !== 'number' || !Number.isInteger(proto) || proto < 0 || proto > 255) throw bad();
      return protoField(proto);
    }
    case 'inet_service':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) throw bad();
      return serviceField(value);
    case 'mark':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) throw bad();
      return markValue(value);
  }
}

function key(set: string, types: readonly ModeSetField[], expr: unknown): Buffer {
  if (types.length === 1) return alone(types[0]!, expr, set);
  const items = (expr as { concat?: unknown[] } | null)?.concat;
  if (!Array.isArray(items) || items.length !== types.length) {
    throw new Error(`set ${set}: key ${JSON.stringify(expr)} is not a concatenation of ${types.join(' . ')}`);
  }
  return Buffer.concat(items.map((v, i) => field(types[i]!, v, set)));
}

/** A key or value of one field, not in a concatenation: as long as its type, without a register's padding. */
function alone(type: ModeSetField, value: unknown, set: string): Buffer {
  if (type === 'inet_service') return field(type, value, set).subarray(0, 2);
  if (type === 'inet_proto') return field(type, value, set).subarray(0, 1);
  return field(type, value, set);
}

function data(set: string, kind: NonNullable<ModeSet['map']>, value: unknown): SetElement['data'] {
  if (kind === 'inet_service') {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) throw new Error(`set ${set}: ${JSON.stringify(value)} is not an inet_service`);
    return serviceField(value, true);
  }
  if (kind !== 'verdict') return alone(kind, value, set);
  const v = value as { goto?: { target?: unknown }; jump?: { target?: unknown } } | null;
  const target = v?.goto?.target ?? v?.jump?.target;
  if (typeof target !== 'string') throw new Error(`set ${set}: ${JSON.stringify(value)} is not a goto or jump verdict`);
  return { code: v?.goto ? NFT_GOTO : NFT_JUMP, chain: target };
}

/** The element commands of an nft JSON batch as netlink set-element changes; anything else throws. */
export function elementChanges(batch: NftBatch): SetElementChange[] {
  return batch.nftables.map((cmd) => {
    const verbs = Object.keys(cmd);
    const verb = verbs[0];
    const body = verb === undefined ? undefined : cmd[verb];
    if (verbs.length !== 1 || (verb !== 'add' && verb !== 'delete') || !body || Object.keys(body).join() !== 'element') {
      throw new Error(`not a set element command: ${JSON.stringify(cmd)}`);
    }
    const e = body.element as { family?: unknown; table?: unknown; name?: unknown; elem?: unknown };
    const set = String(e.name);
    const declared = elementSet(set);
    if (!declared) throw new Error(`set ${set}: not a set a mode or pool change writes`);
    if (e.family !== 'ip' || typeof e.table !== 'string') throw new Error(`set ${set}: not in an ip table`);
    if (!Array.isArray(e.elem)) throw new Error(`set ${set}: elements are not a list`);
    const elements = e.elem.map((item: unknown): SetElement => {
      if (!declared.map) return { key: key(set, declared.type, item) };
      // A delete may name a map's element by its key alone.
      if (verb === 'delete' && !Array.isArray(item)) return { key: key(set, declared.type, item) };
      if (!Array.isArray(item) || item.length !== 2) throw new Error(`set ${set}: map element ${JSON.stringify(item)} is not [key, data]`);
      return { key: key(set, declared.type, item[0]), data: data(set, declared.map, item[1]) };
    });
    return { verb, table: e.table, set, elements };
  });
}

/** Room for every slot of 100 Maglev pools deleted and added again in one transaction (~23 MB). */
const SEND_BUFFER_BYTES = 64 << 20;

export interface NetlinkElementWriterOptions {
  /** Network namespace (name under /run/netns or a path); default: the process's own. */
  netns?: string;
}

/**
 * Sends each batch as one nf_tables transaction over a NETLINK_NETFILTER socket and checks
 * every ack. The socket is opened on first use and kept: opening one costs about as much as
 * the change itself.
 */
export class NetlinkElementWriter implements ElementWriter {
  private socket: NetlinkSocket | undefined;

  constructor(private readonly options: NetlinkElementWriterOptions = {}) {}

  async apply(batch: NftBatch): Promise<void> {
    const changes = splitSetElementChanges(elementChanges(batch));
    if (changes.length === 0) return;
    const socket = (this.socket ??= this.open());
    const first = socket.reserveSeq(changes.length + 2);
    const encoded = encodeSetElementBatch(changes, first);
    let socketError: Error | undefined;
    // A receive error closes the socket (see open()), which fails the transaction: say why.
    const onError = (e: Error): void => {
      socketError = e;
    };
    socket.on('error', onError);
    let result;
    try {
      result = await socket.transaction('nf_tables set elements', encoded.buffer, first, encoded.count);
    } catch (e) {
      throw socketError ?? e;
    } finally {
      socket.off('error', onError);
    }
    const failure = result.failures[0];
    if (!failure) return;
    // The kernel aborted the whole transaction: name the first message it refused.
    const change = failure.index === 0 ? undefined : encoded.changes[failure.index - 1];
    const what = change ? `${change.verb} element in set ${change.table} ${change.set}` : 'nf_tables set element batch';
    const others = result.failures.length > 1 ? ` (and ${result.failures.length - 1} more refused message(s)); nothing was changed` : '; nothing was changed';
    const err = new NetlinkError(what, failure.errno, undefined, failure.kernelMessage);
    err.message += others;
    throw err;
  }

  private open(): NetlinkSocket {
    // A transaction is one sendmsg, which must fit the send buffer: a reload that replaces a
    // backend in each of 100 Maglev pools is ~80,000 elements, ~2.3 MB (the default is 208 KiB).
    const socket = new NetlinkSocket(NETLINK_NETFILTER, { sendBufferBytes: SEND_BUFFER_BYTES, receiveBufferBytes: 8 << 20, ...(this.options.netns === undefined ? {} : { netns: this.options.netns }) });
    // A receive error leaves a transaction unanswered: close the socket, which fails it,
    // and let the next change open a new one.
    socket.on('error', () => {
      if (this.socket === socket) this.socket = undefined;
      socket.close();
    });
    return socket;
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }
}
