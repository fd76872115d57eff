import { describe, expect, it } from 'vitest';
import { inNetwork, ipv4FromNumber, ipv4ToNumber } from '../../src/packet/ipv4.js';

describe('inNetwork', () => {
  it('matches addresses to networks, written as a network or as an interface address', () => {
    expect(inNetwork('198.18.0.255', '198.18.0.0/24')).toBe(true);
    expect(inNetwork('198.18.1.0', '198.18.0.0/24')).toBe(false);
    expect(inNetwork('198.18.0.2', '198.18.0.101/24')).toBe(true);
    expect(inNetwork('198.19.255.1', '198.18.0.0/15')).toBe(true);
    expect(inNetwork('10.0.0.1', '0.0.0.0/0')).toBe(true);
    expect(inNetwork('203.0.113.10', '203.0.113.10')).toBe(true);
    expect(inNetwork('203.0.113.11', '203.0.113.10/32')).toBe(false);
  });

  it('says what is not an address or a prefix', () => {
    expect(() => inNetwork('198.18.0.256', '198.18.0.0/24')).toThrow(/not an IPv4 address/);
    expect(() => inNetwork('198.18.0.1', '198.18.0.0/33')).toThrow(/not a prefix length/);
  });
});

describe('ipv4 as a number', () => {
  it('round-trips', () => {
    for (const a of ['0.0.0.0', '198.51.100.7', '255.255.255.255']) expect(ipv4FromNumber(ipv4ToNumber(a))).toBe(a);
  });
});
