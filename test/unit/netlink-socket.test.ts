import { constants as osConstants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { NETLINK_ROUTE } from '../../src/netlink/message.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';

/** What the native layer reports for a datagram it could not receive (datagram null, errno). */
type Receive = (datagram: Buffer | null, errno: number) => void;

describe('NetlinkSocket receive errors', () => {
  it('a receive error other than an overrun is counted and never an unhandled error event', () => {
    const socket = new NetlinkSocket(NETLINK_ROUTE);
    try {
      const receive = (socket as unknown as { onDatagram: Receive }).onDatagram.bind(socket);
      expect(() => receive(null, osConstants.errno.EIO)).not.toThrow();
      expect(socket.receiveErrors).toBe(1);
      const heard: Error[] = [];
      socket.on('error', (e: Error) => heard.push(e));
      receive(null, osConstants.errno.EIO);
      expect(socket.receiveErrors).toBe(2);
      expect(heard.map((e) => e.message)).toEqual([expect.stringMatching(/receive.*EIO/)]);
    } finally {
      socket.close();
    }
  });
});
