import { ConfigError } from '../pipeline/errors.js';
import { REVERSED_TEMPLATE } from '../pipeline/prompts/induction.js';
import {
  REVERSE_FORMAT_USES,
  REVERSE_FORMATS,
  type ReverseFormat,
  tuningFormatOf,
} from '../reverse/formats.js';
import { INSTRUCTION_SHAPES } from '../reverse/read-instructions.js';
import {
  REJECT_REASONS,
  type ReverseCounts,
  ReverseDataOptions,
  type ReversePaths,
  reverseData,
} from '../reverse/reverse-data.js';
import type { CliIo } from './main.js';

const formatLines = REVERSE_FORMATS.map(
  (format) => `  ${format.padEnd(19)} ${REVERSE_FORMAT_USES[format]}`,
).join('\n');

const USAGE = `Usage: safer-instruct reverse-data <dataset...> --out <file> --format <format> [options]
       safer-instruct reverse-data <dataset...> --out <file> --base-model <model id> [options]

Turns instruction datasets into training data for a reversed model, one that writes the instruction a
response answers (stage 0 of the Safer-Instruct method). Reads Alpaca (instruction, input, output),
Dolly (instruction, context, response), ShareGPT (conversations) and OpenAI-style (messages) records
from a .json array or JSON Lines, one example per user->assistant turn of a conversation. The model
reads the response inside the ${REVERSED_TEMPLATE.version} prompt, the one induction asks a tuned
model with, and learns to write the instruction.

Formats:
${formatLines}
  With alpaca, the trainer's template wraps the fields: give induction the same template.

Options:
  --out <file>            the training file (required); <stem>.heldout.jsonl, <stem>.rejects.jsonl
                          and <stem>.manifest.json go next to it
  --format <format>       the training record format, from the list above
  --base-model <id>       instead of --format: the format Bedrock fine-tuning takes for this base
                          model, e.g. amazon.nova-micro-v1:0:128k
  --heldout <fraction>    the share of examples held out to evaluate the tuned model, as a fraction
                          (0.05) or a percentage (5%); 0 for none (default 0.05)
  --heldout-out <file>    where the held-out examples go, as {id, instruction, response} lines
  --min-chars <n>         the fewest characters either side may have (default 10)
  --max-chars <n>         the most characters either side may have (default 8000)
  --shape <shape>         read every record as one of ${INSTRUCTION_SHAPES.join(', ')}
                          (default: detected per record)

Reasons for a reject: ${REJECT_REASONS.slice(0, 4).join(', ')},
  ${REJECT_REASONS.slice(4).join(', ')}.
Every record, or turn of a conversation, ends in exactly one of the training, held-out and rejects
files. An example is held out by a hash of its text, so the split does not depend on file order.
Exit status: 0 when the files were written, 1 when an input cannot be read or no example is left to
train on, 2 on a usage error.`;

class UsageError extends Error {
  override name = 'UsageError';
}

const firstLine = (error: unknown): string =>
  ((error as { message?: string })?.message ?? String(error)).split('\n')[0] || 'unknown error';

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/** A number flag as a number, or a usage error naming the flag. */
function numberFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const percent = value.trim().endsWith('%');
  const n = Number(percent ? value.trim().slice(0, -1) : value);
  if (value.trim() === '' || !Number.isFinite(n))
    throw new UsageError(`${flag} takes a number, not "${value}"`);
  return percent ? n / 100 : n;
}

/** The format from --format or --base-model: exactly one of them. */
function formatFrom(format: string | undefined, baseModel: string | undefined): ReverseFormat {
  if (format !== undefined && baseModel !== undefined)
    throw new UsageError('give --format or --base-model, not both');
  if (baseModel !== undefined)
    try {
      return tuningFormatOf(baseModel);
    } catch (error) {
      throw error instanceof ConfigError ? new UsageError(`--base-model: ${error.message}`) : error;
    }
  if (format === undefined) throw new UsageError('--format or --base-model is required');
  if (!(REVERSE_FORMATS as readonly string[]).includes(format))
    throw new UsageError(`--format takes one of ${REVERSE_FORMATS.join(', ')}, not "${format}"`);
  return format as ReverseFormat;
}

const FLAG_OF: Record<string, string> = {
  inputs: '<dataset...>',
  out: '--out',
  heldout: '--heldout',
  heldoutOut: '--heldout-out',
  minChars: '--min-chars',
  maxChars: '--max-chars',
  shape: '--shape',
};

/** A one-screen summary of a run: counts, rejects by reason, and where each file went. */
export function renderReverseSummary(
  format: ReverseFormat,
  inputs: number,
  counts: ReverseCounts,
  paths: ReversePaths,
): string {
  const width = String(Math.max(counts.train, counts.heldout, counts.rejected)).length;
  const n = (value: number) => String(value).padStart(width);
  const lines = [
    `reverse-data: ${inputs} ${inputs === 1 ? 'file' : 'files'}, ${counts.read} records, ${counts.examples} examples`,
    `  train     ${n(counts.train)}  ${paths.train} (${format})`,
    `  held out  ${n(counts.heldout)}  ${paths.heldout}`,
    `  rejected  ${n(counts.rejected)}  ${paths.rejects}`,
    ...REJECT_REASONS.filter((reason) => counts.rejectedByReason[reason] > 0).map(
      (reason) => `    ${reason.padEnd(20)} ${counts.rejectedByReason[reason]}`,
    ),
    `  manifest  ${' '.repeat(width)}  ${paths.manifest}`,
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * `safer-instruct reverse-data <dataset...> --out <file> --format <format>`: writes reversed training
 * data, the held-out split, the rejects and a manifest, and prints a summary. Returns the exit code: 0,
 * 1 when an input cannot be read or no example is left to train on, 2 on a usage error.
 */
export async function reverseDataCommand(args: readonly string[], io: CliIo): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        out: { type: 'string' },
        format: { type: 'string' },
        'base-model': { type: 'string' },
        heldout: { type: 'string' },
        'heldout-out': { type: 'string' },
        'min-chars': { type: 'string' },
        'max-chars': { type: 'string' },
        shape: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length === 0) throw new UsageError('reverse-data takes at least one dataset file');
    const out = str(values.out);
    if (out === undefined) throw new UsageError('--out is required');
    const shape = str(values.shape);
    if (shape !== undefined && !(INSTRUCTION_SHAPES as readonly string[]).includes(shape))
      throw new UsageError(`--shape takes one of ${INSTRUCTION_SHAPES.join(', ')}, not "${shape}"`);
    const format = formatFrom(str(values.format), str(values['base-model']));
    const parsed = ReverseDataOptions.safeParse({
      inputs: positionals,
      out,
      format,
      heldout: numberFlag('--heldout', str(values.heldout)),
      heldoutOut: str(values['heldout-out']),
      minChars: numberFlag('--min-chars', str(values['min-chars'])),
      maxChars: numberFlag('--max-chars', str(values['max-chars'])),
      shape,
    });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = String(issue?.path[0] ?? '');
      throw new UsageError(`${FLAG_OF[field] ?? field}: ${issue?.message ?? 'invalid'}`);
    }
    const { counts, paths } = await reverseData(parsed.data);
    io.stdout.write(renderReverseSummary(format, positionals.length, counts, paths));
    if (counts.train === 0) {
      say(`safer-instruct: no example is left to train on; see why in ${paths.rejects}`);
      return 1;
    }
    return 0;
  } catch (error) {
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    say(`safer-instruct: ${firstLine(error)}`);
    if (usage) say('try: safer-instruct reverse-data --help');
    return usage ? 2 : 1;
  }
}
