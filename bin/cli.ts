import { parseArgs } from 'node:util';
import { main } from '../lib/cli/main.js';

process.exitCode = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  parseArgs,
});
