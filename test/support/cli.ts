import { PassThrough } from 'node:stream';
import { parseArgs } from 'node:util';
import type { CliIo } from '../../lib/cli/main.js';

/** Runs a CLI entry point in process with captured output: its exit code, stdout and stderr. */
export async function captured(
  command: (args: readonly string[], io: CliIo) => Promise<number>,
  args: string[],
) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const chunks = { out: '', err: '' };
  stdout.on('data', (c) => {
    chunks.out += c;
  });
  stderr.on('data', (c) => {
    chunks.err += c;
  });
  const code = await command(args, { stdout, stderr, parseArgs });
  return { code, ...chunks };
}
