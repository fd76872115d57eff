import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { checkOverrideSchema, checkSchema, resolveCheck, statusExpected, checkProblem } from '../../src/config/check.js';

function errorsOf(text: string): string[] {
  try {
    parseConfigText(text, 'c.yaml', checkSchema);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.split('\n');
  }
  throw new Error('expected the check to be refused');
}

describe('check configuration', () => {
  it('gives a TCP connect every 2 s, 1 s timeout, rise 2, fall 3 when nothing is written', () => {
    expect(checkSchema.parse({})).toEqual({ enabled: true, type: 'tcp', inter: 2000, timeout: 1000, rise: 2, fall: 3 });
    expect(resolveCheck(undefined)).toMatchObject({ type: 'tcp', inter: 2000, timeout: 1000, rise: 2, fall: 3, path: '/', expect: ['2xx', '3xx'], args: [] });
  });

  it('reads durations in ms or with a unit', () => {
    const c = parseConfigText('type: http\ninter: 1.5s\ntimeout: 500ms\npath: /health\nexpect: [200, "3xx", "400-404"]\n', 'c.yaml', checkSchema);
    expect(c).toMatchObject({ inter: 1500, timeout: 500, path: '/health' });
    expect(parseConfigText('inter: 1m\ntimeout: 2000\n', 'c.yaml', checkSchema)).toMatchObject({ inter: 60_000, timeout: 2000 });
  });

  it('names the line and field of what is wrong', () => {
    expect(errorsOf('type: icmp\n')).toEqual(["c.yaml:1: type: expected 'tcp', 'http', 'https' or 'script'"]);
    expect(errorsOf('inter: 2 hours\n')[0]).toMatch(/^c\.yaml:1: inter: expected an interval like "2s"/);
    expect(errorsOf('inter: 50\n')[0]).toMatch(/^c\.yaml:1: inter: expected an interval of 100\.\.3600000 whole milliseconds, got 50/);
    expect(errorsOf('type: tcp\npath: /x\n')).toEqual(['c.yaml:2: path: only http/https checks take path (this check is tcp)']);
    expect(errorsOf('type: script\n')).toEqual(['c.yaml:1: command: is required for a script check']);
    expect(errorsOf('type: http\nbodyRegex: "a("\n')).toEqual(['c.yaml:2: bodyRegex: expected a valid regular expression']);
    expect(errorsOf('inter: 1s\ntimeout: 2s\n')).toEqual(['c.yaml:2: timeout: must not exceed inter (2000 ms > 1000 ms)']);
    expect(errorsOf('type: http\nexpect: [999]\n')[0]).toMatch(/^c\.yaml:2: expect\[0\]: expected a status code/);
    expect(errorsOf('rise: 0\n')).toEqual(['c.yaml:1: rise: expected rise count in 1..100']);
    expect(errorsOf('source: lb1\n')).toEqual(['c.yaml:1: source: expected an IPv4 address (a.b.c.d)']);
    expect(errorsOf('intervall: 2s\n')).toEqual(['c.yaml:1: intervall: unknown field']);
  });

  it('lays a backend override over the VIP check', () => {
    const vip = checkSchema.parse({ type: 'http', path: '/health', inter: '1s', host: 'www.example' });
    expect(resolveCheck(vip, checkOverrideSchema.parse({ fall: 5, port: 8080 }))).toMatchObject({ type: 'http', path: '/health', host: 'www.example', inter: 1000, fall: 5, port: 8080 });
    const script = resolveCheck(vip, checkOverrideSchema.parse({ type: 'script', command: '/bin/true' }));
    expect(script).toMatchObject({ type: 'script', command: '/bin/true', args: [], path: '/' });
    expect(script.host).toBeUndefined();
    expect(checkProblem(resolveCheck(vip, checkOverrideSchema.parse({ type: 'script' })))).toBe('command: is required for a script check');
    expect(checkProblem(resolveCheck(vip, checkOverrideSchema.parse({ timeout: '5s' })))).toMatch(/must not exceed inter/);
  });

  it('matches statuses by code, class and range', () => {
    expect(statusExpected([200], 200)).toBe(true);
    expect(statusExpected([200], 204)).toBe(false);
    expect(statusExpected(['2xx', '3xx'], 302)).toBe(true);
    expect(statusExpected(['2xx', '3xx'], 404)).toBe(false);
    expect(statusExpected(['400-404'], 403)).toBe(true);
    expect(statusExpected(['400-404'], 405)).toBe(false);
  });
});
