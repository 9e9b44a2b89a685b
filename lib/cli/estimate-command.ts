import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { modelsOf } from '../pipeline/config.js';
import {
  bedrockTokenCounter,
  charsOver4,
  DEFAULT_ASSUMPTIONS,
  estimateRun,
  type RunEstimate,
} from '../pipeline/estimate.js';
import { SsmParameterStore } from '../pipeline/parameters.js';
import { type CliIo, CONFIG_OPTIONS, configFrom } from './main.js';

const USAGE = `Usage: safer-instruct estimate <input.jsonl|input.csv> [options]

Estimates what \`safer-instruct run\` would call and pay for the input, and pays nothing: split reads the
input as in a run and counts the records it keeps; each model stage's prompts are rendered from its real
templates for up to --sample records, spread evenly, and scaled up to all of them. Tokens of bedrock:
models are counted by Bedrock CountTokens (free) when credentials allow, else as characters / 4.
Prints each stage's calls, input and output tokens and cost, on-demand and in batch, and the totals.

Options:
  --config <file>          a JSON pipeline configuration, as for run
  --model <spec>           the model of every stage
  --induce-model <spec>    the model that writes instructions
  --judge-model <spec>     the model that filters instructions and evaluates pairs
  --respond-model <spec>   the model that writes chosen responses
  --text-field <name>      the field or column holding the text (default text)
  --category-field <name>  the field or column holding the category (default category)
  --id-field <name>        the field or column holding a record id (default id)
  --format <jsonl|csv>     the input format (default: from the file extension)
  --few-shot <file>        few-shot induction examples, as for run (they lengthen induce's prompts)
  --shots <n>              how many examples --few-shot draws (default 4)
  --sample <n>             records whose prompts are rendered and counted (default 2000)
  --no-count-tokens        count every prompt as characters / 4, without asking Bedrock
  --json                   print the estimate as one JSON document

What no prompt can tell is assumed: an induced instruction of ${DEFAULT_ASSUMPTIONS.instructionChars} characters; a chosen
response of ${DEFAULT_ASSUMPTIONS.responseCharsPerMaxToken} characters per token of stages.respond.maxTokens; verdicts of
${DEFAULT_ASSUMPTIONS.filterOutputTokens} (filter) and ${DEFAULT_ASSUMPTIONS.evaluateOutputTokens} (evaluate) tokens; output at four characters a token; every record
split keeps reaching every stage, once (dedup, rejections and judge retries are not predicted).`;

class UsageError extends Error {
  override name = 'UsageError';
}

const firstLine = (error: unknown): string =>
  ((error as { message?: string })?.message ?? String(error)).split('\n')[0] || 'unknown error';

const grouped = (n: number) => Math.round(n).toLocaleString('en-US');
// Two significant digits below a cent: a per-record cost is often a few millionths of a dollar.
const dollars = (n: number | null) =>
  n === null ? '-' : `$${n >= 100 ? n.toFixed(2) : n >= 0.01 || n === 0 ? n.toFixed(4) : n.toPrecision(2)}`;

/** The estimate as a table: a row per model stage, then the totals and what they rest on. */
export function renderEstimate(estimate: RunEstimate): string {
  const { records, sampled, stages, totals, perRecord } = estimate;
  const header = [
    'stage',
    'calls',
    'input tokens',
    'output tokens',
    'on-demand',
    'batch',
    'counted',
    'model',
  ];
  const rows = [
    ...stages.map((s) => [
      s.stage,
      grouped(s.calls),
      grouped(s.inputTokens),
      grouped(s.outputTokens),
      dollars(s.onDemandUsd),
      dollars(s.batchUsd),
      s.counted,
      s.model,
    ]),
    [
      'total',
      grouped(totals.calls),
      grouped(totals.inputTokens),
      grouped(totals.outputTokens),
      dollars(totals.onDemandUsd),
      dollars(totals.batchUsd),
      '',
      '',
    ],
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  // Names left-aligned, figures right-aligned; the model spec, last, runs as long as it is.
  const line = (cells: string[]) =>
    cells
      .map((c, i) =>
        i === cells.length - 1
          ? c
          : i === 0 || i === 6
            ? c.padEnd(widths[i] ?? 0)
            : c.padStart(widths[i] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [
    `${estimate.input}: ${grouped(records.read)} records read, ${grouped(records.kept)} kept by split, ` +
      `${grouped(records.rejected)} rejected; prompts of ${grouped(sampled)} rendered and counted` +
      (sampled < records.kept ? ', scaled up' : ''),
    '',
    line(header),
    ...rows.map(line),
    '',
    `per record kept: ${dollars(perRecord.onDemandUsd)} on-demand, ${dollars(perRecord.batchUsd)} in batch`,
    `prices: table ${estimate.prices.version} (us-east-1 list prices) and the configuration's prices; ` +
      'nothing was paid for this estimate',
    '',
  ].join('\n');
}

/**
 * `safer-instruct estimate <input> [options]`: what a run over the input would call and cost, as a
 * table or with `--json` as one JSON document. Returns the exit code: 0, 1 when the input or the
 * configuration cannot be read, 2 on a usage error.
 */
export async function estimateCommand(args: readonly string[], io: CliIo): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        ...CONFIG_OPTIONS,
        sample: { type: 'string' },
        'no-count-tokens': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('estimate takes one input file');
    const sample = values.sample === undefined ? undefined : Number(values.sample);
    if (sample !== undefined && !(Number.isInteger(sample) && sample >= 1))
      throw new UsageError(`--sample takes a whole number of at least 1, not "${values.sample}"`);
    const config = await configFrom(values);
    const countWithBedrock =
      !values['no-count-tokens'] && modelsOf(config).some((spec) => spec.startsWith('bedrock:'));
    const counter = countWithBedrock
      ? bedrockTokenCounter({
          client: new BedrockRuntimeClient({}),
          onFallback: (spec, error) =>
            say(
              `estimate: CountTokens unavailable for ${spec} (${(error as Error).name}: ${firstLine(error)}); ` +
                'counting characters / 4',
            ),
        })
      : charsOver4;
    // An ssm: spec names the model ReverseTuning recorded in the account: read it there, as run does.
    const estimate = await estimateRun(positionals[0] as string, config, {
      counter,
      sample,
      parameters: new SsmParameterStore(),
    });
    io.stdout.write(values.json ? `${JSON.stringify(estimate, null, 2)}\n` : renderEstimate(estimate));
    return 0;
  } catch (error) {
    const usage =
      (error as Error).name === 'UsageError' ||
      (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    say(`safer-instruct: ${firstLine(error)}`);
    if (usage) say('try: safer-instruct estimate --help');
    return usage ? 2 : 1;
  }
}
