import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeepalivedConfigError } from '../../src/keepalived/diagnostics.js';
import { MAX_FILES_READ, globMatcher, tokenizeFile, tokenizeText } from '../../src/keepalived/tokenizer.js';
import { writeTree } from './keepalived-corpus.js';

const texts = (text: string): string[] => tokenizeText(text, '/nonexistent/k.conf').tokens.map((t) => t.text);

function errorOf(f: () => unknown): KeepalivedConfigError {
  try {
    f();
  } catch (err) {
    if (err instanceof KeepalivedConfigError) return err;
    throw err;
  }
  throw new Error('no error');
}

describe('keepalived tokenizer', () => {
  it('drops ! and # comments anywhere outside quotes', () => {
    expect(texts('! whole line\n# another\nrouter_id lb1 # trailing\nvirtual_router_id 3#0\npriority 10!0\n')).toEqual([
      'router_id',
      'lb1',
      'virtual_router_id',
      '3',
      'priority',
      '10',
    ]);
  });

  it('keeps quoted strings whole, with # ! braces and escaped quotes inside', () => {
    const { tokens } = tokenizeText('notify "/usr/bin/x --a {b} # !c \\"q\\""\n', 'k.conf');
    expect(tokens.map((t) => [t.text, t.quoted])).toEqual([
      ['notify', false],
      ['/usr/bin/x --a {b} # !c "q"', true],
    ]);
  });

  it('splits braces from words and keeps file and line for nested blocks', () => {
    const { tokens } = tokenizeText('a {\n  b{c}\n  d { e {\n}}\n}', 'k.conf');
    expect(tokens.map((t) => `${t.line}:${t.text}`)).toEqual(['1:a', '1:{', '2:b', '2:{', '2:c', '2:}', '3:d', '3:{', '3:e', '3:{', '4:}', '4:}', '5:}']);
    expect(new Set(tokens.map((t) => t.file))).toEqual(new Set(['k.conf']));
  });

  it('fails on an unterminated quote with file and line', () => {
    const e = errorOf(() => tokenizeText('a\nb "open\n', 'k.conf'));
    expect([e.file, e.line, e.reason]).toEqual(['k.conf', 2, 'unterminated quoted string']);
  });

  it('resolves include globs relative to the including file, sorted, with each token in its own file', () => {
    const top = writeTree({
      'main.conf': 'top 1\ninclude d/*.conf\ntop 2\n',
      'd/b.conf': 'b 1\ninclude ../e/[xy]?.conf\n',
      'd/a.conf': 'a 1\n',
      'd/a.txt': 'not matched\n',
      'e/x1.conf': 'x1 1\n',
      'e/y22.conf': 'not matched: ? is one character\n',
      'e/z1.conf': 'not matched: z is not in [xy]\n',
    });
    const dir = dirname(top);
    const { tokens, files } = tokenizeFile(top);
    expect(tokens.map((t) => `${t.file.slice(dir.length + 1)}:${t.line}:${t.text}`)).toEqual([
      'main.conf:1:top',
      'main.conf:1:1',
      'd/a.conf:1:a',
      'd/a.conf:1:1',
      'd/b.conf:1:b',
      'd/b.conf:1:1',
      'e/x1.conf:1:x1',
      'e/x1.conf:1:1',
      'main.conf:3:top',
      'main.conf:3:2',
    ]);
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(['main.conf', 'd/a.conf', 'd/b.conf', 'e/x1.conf']);
  });

  it('warns when an include glob matches nothing', () => {
    const top = writeTree({ 'main.conf': 'a 1\ninclude conf.d/*.conf\n' });
    const { warnings } = tokenizeFile(top);
    expect(warnings).toEqual([{ file: top, line: 2, message: `include pattern ${join(dirname(top), 'conf.d/*.conf')} matches no file` }]);
  });

  it('detects include cycles, naming the including line', () => {
    const top = writeTree({ 'a.conf': 'x 1\ninclude sub/b.conf\n', 'sub/b.conf': '\n\ninclude ../a.conf\n' });
    const e = errorOf(() => tokenizeFile(top));
    expect([e.file, e.line]).toEqual([join(dirname(top), 'sub/b.conf'), 3]);
    expect(e.reason).toMatch(/^include cycle: .*a\.conf -> .*b\.conf -> .*a\.conf$/);
    const self = writeTree({ 's.conf': 'include *.conf\n' });
    expect(errorOf(() => tokenizeFile(self)).reason).toMatch(/^include cycle/);
  });

  it('fails on a missing include, an include without a name and a bad pattern', () => {
    const top = writeTree({ 'a.conf': 'x 1\n\ninclude nope.conf\n' });
    const e = errorOf(() => tokenizeFile(top));
    expect([e.file, e.line]).toEqual([top, 3]);
    expect(e.reason).toMatch(/cannot read .*nope\.conf: ENOENT/);
    expect(errorOf(() => tokenizeText('include\n', 'k.conf')).line).toBe(1);
    expect(errorOf(() => tokenizeText('\ninclude [z-a]*\n', '/tmp/k.conf')).reason).toMatch(/bad include pattern/);
  });

  it('stops an include expansion that multiplies (each file including the next twice) with an error, quickly', () => {
    // 30 levels: 2^30 reads if followed.
    const files: Record<string, string> = { 'a.conf': 'include l0.conf\n' };
    for (let i = 0; i < 30; i++) files[`l${i}.conf`] = `x ${i}\ninclude l${i + 1}.conf\ninclude l${i + 1}.conf\n`;
    files['l30.conf'] = 'y 1\n';
    const top = writeTree(files);
    const t0 = performance.now();
    const e = errorOf(() => tokenizeFile(top));
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(e.reason).toMatch(new RegExp(`more than ${MAX_FILES_READ} files read through include`));
    expect(e.file).toMatch(/l\d+\.conf$/);
    // A file included a few times over is still fine.
    const few = writeTree({ 'a.conf': 'include b.conf\ninclude b.conf\n', 'b.conf': 'include c.conf\ninclude c.conf\n', 'c.conf': 'z 1\n' });
    expect(tokenizeFile(few).tokens.filter((tk) => tk.text === 'z')).toHaveLength(4);
  });

  it('a glob of many * against a long name answers at once (no catastrophic backtracking)', () => {
    const pattern = `${'*a'.repeat(30)}*b`;
    const t0 = performance.now();
    expect(globMatcher(pattern)('a'.repeat(200))).toBe(false);
    expect(globMatcher(pattern)(`${'a'.repeat(200)}b`)).toBe(true);
    expect(performance.now() - t0).toBeLessThan(100);
    const m = (p: string, names: string[]): string[] => names.filter(globMatcher(p));
    expect(m('*x*y', ['xy', 'axbyc', 'axby', 'yx'])).toEqual(['xy', 'axby']);
    expect(m('a\\*b', ['a*b', 'axb'])).toEqual(['a*b']);
    expect(m('[]a]?', ['ab', ']b', 'bb'])).toEqual(['ab', ']b']);
  });

  it('matches glob(7) segments: * ? [..] [!..] and leading dots', () => {
    const m = (p: string, names: string[]): string[] => names.filter(globMatcher(p));
    expect(m('*.conf', ['a.conf', '.h.conf', 'a.conf.bak', 'conf'])).toEqual(['a.conf']);
    expect(m('.*', ['.h', 'h'])).toEqual(['.h']);
    expect(m('vip?', ['vip1', 'vip12', 'vip'])).toEqual(['vip1']);
    expect(m('[a-c]x', ['ax', 'cx', 'dx'])).toEqual(['ax', 'cx']);
    expect(m('[!a]x', ['ax', 'bx'])).toEqual(['bx']);
    expect(m('[]]', [']', 'a'])).toEqual([']']);
    expect(m('a[', ['a[', 'a'])).toEqual(['a[']);
    expect(m('a\\*', ['a*', 'ab'])).toEqual(['a*']);
    expect(m('(x)+', ['(x)+', 'xx'])).toEqual(['(x)+']);
  });
});
