/**
 * The speaker's child process, as the appliance starts it: in a session of its own, at the
 * speaker's nice, and its session's scheduling group (autogroup) at that nice too, so that the
 * appliance's own work cannot take the speaker's CPU where the kernel groups tasks by session.
 * The child here is a stand-in that answers the line protocol and reports where it runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SpeakerProcess } from '../../src/vrrp/process.js';
import { emptySpeakerCounters } from '../../src/vrrp/speaker.js';

const CHILD = `
const fs = require('node:fs');
const os = require('node:os');
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
send({ type: 'snapshot', state: [], counters: ${JSON.stringify(emptySpeakerCounters())} });
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line);
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const session = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
  let autogroup = null;
  try { autogroup = fs.readFileSync('/proc/self/autogroup', 'utf8').trim(); } catch {}
  fs.writeFileSync(process.env.REPORT, JSON.stringify({ pid: process.pid, session, nice: os.getPriority(), autogroup }));
  send({ type: 'reply', id: c.id });
});
`;

describe('the speaker process', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs in a session of its own, at its nice, its session group at that nice too (or says why not)', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-speaker-'));
    const report = path.join(dir, 'report.json');
    process.env.REPORT = report;
    const speaker = new SpeakerProcess([process.execPath, '-e', CHILD], -5);
    try {
      await speaker.start();
      await speaker.freshState();
      const where = JSON.parse(fs.readFileSync(report, 'utf8')) as { pid: number; session: number; nice: number; autogroup: string | null };
      // Its own session: the session's id is its own pid.
      expect(where.session).toBe(where.pid);
      expect(where.session).not.toBe(Number(fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[3]));
      if (speaker.priorityError === undefined) {
        expect(where.nice).toBe(-5);
        if (where.autogroup !== null) expect(where.autogroup).toMatch(/ nice -5$/);
      } else {
        // Not root (no CAP_SYS_NICE): it runs, at the normal priority, and the appliance logs why.
        expect(process.getuid?.()).not.toBe(0);
        expect(where.nice).toBe(0);
      }
    } finally {
      delete process.env.REPORT;
      await speaker.stop();
    }
  });
});
