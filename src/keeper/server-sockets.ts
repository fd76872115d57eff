/**
 * The server's side of a socket-table rebuild (rebuild.ts), read in one network namespace: its
 * ESTABLISHED TCP sockets (sock_diag) and the networks its interfaces are on (rtnetlink).
 */
import { Addresses } from '../netlink/route.js';
import { SockDiag, type DiagSocket } from '../netlink/sockdiag.js';
import type { SocketTable } from './keeper.js';

export class ServerSockets implements SocketTable {
  private readonly diag: SockDiag;
  private readonly addresses: Addresses;

  /** `options.netns`: read that namespace's (the keeper's own by default). */
  constructor(options: { netns?: string } = {}) {
    this.diag = new SockDiag(options);
    this.addresses = new Addresses(options);
  }

  tcpSockets(localPorts: number[]): Promise<DiagSocket[]> {
    return this.diag.tcpSockets(localPorts);
  }

  async networks(): Promise<string[]> {
    return (await this.addresses.all()).map((a) => `${a.address}/${a.prefixLength}`);
  }

  close(): void {
    this.diag.close();
    this.addresses.close();
  }
}
