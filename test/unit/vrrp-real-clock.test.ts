/**
 * The speaker's real clock: a timer that became due while the process was busy (not
 * scheduled, on a loaded box) gives its verdict only after the packets that arrived meanwhile
 * were read — otherwise a BFD Detection Time or a Master_Down timer takes a live master for
 * dead on waking, with its packets waiting in the socket.
 */
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { realClock } from '../../src/vrrp/speaker.js';

describe('realClock', () => {
  it('a timer due while the process was busy fires after the packets that arrived meanwhile, which can cancel it', async () => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const { port } = socket.address();
    const order: string[] = [];
    const timer = realClock.setTimer(5, () => order.push('timer'));
    socket.on('message', () => {
      order.push('packet');
      timer.cancel(); // a BFD packet re-arms the Detection Time
    });
    // Busy past the timer's due time (a child process sends the packet meanwhile).
    execFileSync(process.execPath, ['-e', `require('node:dgram').createSocket('udp4').send('x', ${port}, '127.0.0.1', () => process.exit(0))`]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.close();
    expect(order).toEqual(['packet']);
  });

  it('a timer nothing cancels fires once, and a cancelled one never', async () => {
    const fired: string[] = [];
    realClock.setTimer(1, () => fired.push('a'));
    realClock.setTimer(1, () => fired.push('b')).cancel();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(fired).toEqual(['a']);
  });
});
