/**
 * `vipshift console [--lab NAME | --controller URL --credentials DIR] [--mono] [--view V]`:
 * the operator's console (src/console). `--once` prints one frame as plain text and exits
 * (1 when the controller did not answer).
 */
import { parseArgs } from 'node:util';
import { lineText } from '../console/format.js';
import { VIEWS, frame, initialUi, type ConsoleData, type View } from '../console/model.js';
import { ConsoleSource } from '../console/source.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

const USAGE = `usage: vipshift console [--lab NAME | --controller URL --credentials DIR] [--identity ID]
                        [--mono] [--view ${VIEWS.join('|')}] [--once [--width N]]
`;

export async function consoleCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        ...CONTROLLER_OPTIONS,
        once: { type: 'boolean' },
        mono: { type: 'boolean' },
        view: { type: 'string' },
        width: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`vipshift console: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const view = (values.view ?? 'site') as View;
  if (!VIEWS.includes(view)) {
    process.stderr.write(`vipshift console: --view must be one of ${VIEWS.join(', ')}\n`);
    return 2;
  }
  let source: ConsoleSource;
  try {
    const api = controllerClient(values);
    source = new ConsoleSource(api);
  } catch (err) {
    process.stderr.write(`vipshift console: ${(err as Error).message}\n`);
    return 1;
  }
  if (values.once) {
    const width = Number(values.width ?? process.stdout.columns ?? 80) || 80;
    const ui = initialUi(view);
    const data: ConsoleData = await source.refresh({ target: source.target, now: Date.now() }, ui, 1000);
    const lines = frame(data, ui, width, Infinity).map((l) => lineText(l).trimEnd());
    process.stdout.write(`${lines.join('\n')}\n`);
    return data.site && 'ok' in data.site ? 0 : 1;
  }
  if (!process.stdout.isTTY) {
    process.stderr.write('vipshift console: not a terminal (use --once for one frame as text)\n');
    return 2;
  }
  const mono = Boolean(values.mono) || (process.env.NO_COLOR ?? '') !== '';
  const { runScreen } = await import('../console/screen.js');
  return runScreen(source, { mono, view });
}
