#!/usr/bin/env node
/** The `vipshift` command: one subcommand per part, each in src/cli/. */
import { main } from './cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vipshift: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
