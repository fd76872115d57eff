/**
 * The tokenizer, parser and importer on random and mutated keepalived.conf text: whatever comes
 * in, the only exception is KeepalivedConfigError (with a file and a line ≥ 1 inside the text).
 * Seeded, so a failure prints the seed and the input and reproduces.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeepalivedConfigError, type Warning } from '../../src/keepalived/diagnostics.js';
import { hostFacts, importStatements } from '../../src/keepalived/import.js';
import { parse } from '../../src/keepalived/parser.js';
import { tokenizeText } from '../../src/keepalived/tokenizer.js';
import { broken, corpus, writeTree } from './keepalived-corpus.js';
import { prng } from '../support/prng.js';

const WORDS = [
  '{', '}', '{', '}', '\n', '\n', '\n', '"', '!', '#', 'include', '*.conf', 'vrrp_instance', 'VI_1', 'VI_2', 'vrrp_sync_group', 'group',
  'global_defs', 'router_id', 'vrrp_version', '3', '2', 'vrrp_strict', 'state', 'MASTER', 'BACKUP', 'interface', 'ext0', 'int0',
  'virtual_router_id', 'priority', 'advert_int', '0.05', '40.96', '255', '256', '0', '-1', '1e3', 'preempt', 'nopreempt',
  'preempt_delay', 'virtual_ipaddress', '203.0.113.10/24', '203.0.113.10/33', '198.18.0.10/24', 'dev', 'label', 'brd', 'unicast_peer',
  'unicast_src_ip', 'track_interface', 'accept', 'no_accept', 'authentication', 'virtual_server', '203.0.113.10', '80', 'fwmark',
  'lb_algo', 'rr', 'sh', 'lc', 'lb_kind', 'NAT', 'DR', 'protocol', 'TCP', 'UDP', 'SCTP', 'real_server', '198.18.0.101', 'weight',
  'TCP_CHECK', 'persistence_timeout', 'lvs_sched', '__proto__', 'constructor', 'toString', 'garp_master_repeat', 'version', '::1',
  'HTTP_GET', 'SSL_GET', 'MISC_CHECK', 'url', 'path', 'status_code', 'misc_path', 'connect_timeout', 'connect_port', 'retry', 'delay_loop',
  'sorry_server', 'inhibit_on_failure', 'use_vmac', 'notify_master', 'notify', '/bin/true', 'mh', '0.001',
];
const CHARS = ' \t\n{}"!#\\abc019./:*?[]-_';

/** Relative, harmless include targets only: the fuzz must not read the machine's files. */
function tame(text: string): string {
  return text.replace(/include(?=[^\n]*(\/|\.\.))/g, 'includ');
}

function check(text: string, file: string, seed: number): void {
  const warnings: Warning[] = [];
  try {
    importStatements(parse(tokenizeText(text, file).tokens, warnings), warnings, hostFacts, file);
  } catch (err) {
    if (!(err instanceof KeepalivedConfigError)) {
      throw new Error(`seed ${seed}: ${String(err)} escaped on input ${JSON.stringify(text)}`, { cause: err });
    }
    expect(err.line).toBeGreaterThanOrEqual(0);
    expect(err.file).toMatch(/\.conf$/);
  }
  for (const w of warnings) expect(w.line).toBeGreaterThanOrEqual(1);
}

describe('keepalived import fuzz', () => {
  // Included by the `include *.conf` the generator writes: real files next to the fuzz input.
  const dir = mkdtempSync(join(tmpdir(), 'vtkpa-fuzz-'));
  writeTree({ 'inc.conf': 'vrrp_instance VI_9 {\n interface ext0\n virtual_router_id 9\n virtual_ipaddress {\n 203.0.113.9\n }\n}\n' }, dir);
  const file = join(dir, 'fuzz.conf');

  it('survives random token soup', () => {
    for (let seed = 1; seed <= 3000; seed++) {
      const rnd = prng(seed);
      const n = Math.floor(rnd() * 80);
      let text = '';
      for (let i = 0; i < n; i++) text += WORDS[Math.floor(rnd() * WORDS.length)] + (rnd() < 0.8 ? ' ' : '');
      check(tame(text), file, seed);
    }
  });

  it('survives mutations of the corpus and the broken cases', () => {
    const seeds = [...Object.values(corpus), ...Object.values(broken).map((b) => b.tree)].map((tree) => Object.values(tree)[0]!);
    for (let seed = 1; seed <= 3000; seed++) {
      const rnd = prng(seed * 7919);
      let text = seeds[seed % seeds.length]!;
      const edits = 1 + Math.floor(rnd() * 6);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rnd() * (text.length + 1));
        const len = Math.floor(rnd() * 12);
        switch (Math.floor(rnd() * 5)) {
          case 0: // delete a run
            text = text.slice(0, at) + text.slice(at + len);
            break;
          case 1: // insert random characters
            text = text.slice(0, at) + Array.from({ length: len }, () => CHARS[Math.floor(rnd() * CHARS.length)]).join('') + text.slice(at);
            break;
          case 2: // insert a keyword
            text = `${text.slice(0, at)} ${WORDS[Math.floor(rnd() * WORDS.length)]} ${text.slice(at)}`;
            break;
          case 3: {
            // duplicate a line elsewhere
            const lines = text.split('\n');
            const from = lines[Math.floor(rnd() * lines.length)]!;
            lines.splice(Math.floor(rnd() * lines.length), 0, from);
            text = lines.join('\n');
            break;
          }
          default: // replace a digit, to walk the ranges
            text = text.replace(/\d/, String(Math.floor(rnd() * 10)));
        }
      }
      check(tame(text), file, seed);
    }
  });

  it('survives binary garbage', () => {
    for (let seed = 1; seed <= 500; seed++) {
      const rnd = prng(seed + 1e6);
      const bytes = Buffer.from(Array.from({ length: Math.floor(rnd() * 300) }, () => Math.floor(rnd() * 256)));
      check(tame(bytes.toString('utf8')), file, seed);
    }
  });
});
