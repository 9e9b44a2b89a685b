import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { cacheRoot } from '../pipeline/cache-dir.js';
import { loadConfigFile, ModelSpec, type PipelineConfigInput, parseConfig } from '../pipeline/config.js';
import { CallCache } from '../pipeline/models/call-cache.js';
import { GovernorPool } from '../pipeline/models/governor-pool.js';
import { ModelRegistry } from '../pipeline/models/registry.js';
import { SsmParameterStore } from '../pipeline/parameters.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import {
  type EvaluateInductionDeps,
  evaluateInduction,
  type InductionEval,
} from '../reverse/eval-induction.js';
import { drawFewShotExamples } from '../reverse/few-shot.js';
import type { CliIo } from './main.js';

const PROMPTS = ['auto', 'tuned', 'few-shot'] as const;

const USAGE = `Usage: safer-instruct eval-induction <heldout.jsonl> --model <spec> [options]

Measures how close induced instructions come to the true ones on a held-out split, so tuned and
few-shot induction can be compared on the same data. Each response is sent to the model exactly as
the induce stage sends it, and the answer is cleaned as the stage cleans it. Reports mean ROUGE-L
(precision, recall, F1), the exact-match rate, and with a judge the rate judged equivalent.

The held-out file is JSON Lines of {id?, instruction, response} (as reverse-data writes it) or
Alpaca-style {instruction, input?, output}.

Options:
  --model <spec>             the induction model to evaluate (required); an ssm:<parameter> spec is
                             read from SSM Parameter Store
  --judge-model <spec>       also ask this model whether each induced instruction asks for the same
                             thing as the true one
  --prompt <${PROMPTS.join('|')}>  how the model is prompted: the reversed training prompt of a tuned
                             model, or reversed examples for a general one (default: the config's
                             stages.induce.prompt, auto: tuned for custom, imported and SageMaker models)
  --config <file>            a JSON pipeline configuration: its induce settings (maxTokens, temperature,
                             prompt, examples, template), limits, retries, callConcurrency and prices
  --few-shot <file>          draw the few-shot examples from this file (reverse-data's training
                             output, never the held-out file itself)
  --shots <n>                how many examples --few-shot draws (default 4)
  --limit <n>                evaluate the first n examples of the file only
  --examples <n>             rows of reference and prediction the text report shows (default 5)
  --json                     print the report as one JSON document
  --out <report.json>        also write the report as JSON to this file
  --cache-dir <dir>          where answered model calls are kept, shared with runs
                             (default ${join(cacheRoot(), 'calls')})
  --no-cache                 neither read nor write the call cache

A model spec is bedrock:<modelId>, bedrock-custom:<arn>[#body], sagemaker:<endpoint>[#payload],
openai:<baseURL>#<model>, llama:<file.gguf|hf:URI> or ssm:<parameter>.
Exit status: 0 when the evaluation ran, 1 when the held-out file, the configuration or a model
fails, 2 on a usage error.`;

class UsageError extends Error {
  override name = 'UsageError';
}

const firstLine = (error: unknown): string =>
  ((error as { message?: string })?.message ?? String(error)).split('\n')[0] || 'unknown error';

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/** A whole-number flag of at least `min`, or its default when absent. */
function wholeNumber(flag: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min)
    throw new UsageError(`${flag} takes a whole number of at least ${min}, not "${value}"`);
  return n;
}

function modelSpec(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const parsed = ModelSpec.safeParse(value);
  if (!parsed.success)
    throw new UsageError(`${flag}: ${parsed.error.issues[0]?.message ?? 'not a model spec'}`);
  return parsed.data;
}

const fixed = (n: number) => n.toFixed(4);
const percent = (rate: number) => `${(rate * 100).toFixed(1)}%`;
const count = (n: number) => n.toLocaleString('en-US');

/** Lays out rows of cells: the first column left-aligned, the rest right-aligned, two spaces apart. */
function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows)
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  return rows.map((row) =>
    row
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/**
 * The evaluation as text: the figures in a short table, what the calls cost, and the first `examples`
 * rows of reference against prediction. Instructions are shown as JSON strings, so an empty one shows.
 */
export function renderInductionEval(report: InductionEval, examples: number): string {
  const { rougeL, equivalence, usage } = report;
  const exact = report.rows.filter((r) => r.exact).length;
  const out = [
    `${report.heldout}: ${count(report.examples)} examples`,
    `model: ${report.model} (${report.prompt} prompt, template ${report.template.version} ${report.template.hash})`,
    ...(equivalence
      ? [
          `judge: ${equivalence.model} (template ${equivalence.template.version} ${equivalence.template.hash})`,
        ]
      : []),
    '',
    ...table([
      ['figure', 'value', 'of'],
      ['ROUGE-L precision', fixed(rougeL.precision), ''],
      ['ROUGE-L recall', fixed(rougeL.recall), ''],
      ['ROUGE-L F1', fixed(rougeL.f1), ''],
      ['exact match', percent(report.exactMatch), `${count(exact)}/${count(report.examples)}`],
      ...(equivalence
        ? [
            [
              'judged equivalent',
              equivalence.rate === null ? '-' : percent(equivalence.rate),
              `${count(equivalence.equivalent)}/${count(equivalence.judged)}`,
            ],
          ]
        : []),
    ]),
  ];
  const failures = [
    ...(report.inductionFailures > 0
      ? [`${count(report.inductionFailures)} inductions failed (scored 0)`]
      : []),
    ...(equivalence && equivalence.failures > 0
      ? [`${count(equivalence.failures)} not judged (no valid verdict; left out of the rate)`]
      : []),
  ];
  if (failures.length > 0) out.push(failures.join('; '));
  out.push(
    '',
    ...table([
      ['calls', 'paid', 'cached', 'retried', 'tokens in', 'tokens out', 'cost'],
      ...Object.entries(usage).flatMap(([who, s]) =>
        s
          ? [
              [
                who,
                count(s.calls),
                count(s.cacheHits),
                count(s.retries),
                count(s.inputTokens),
                count(s.outputTokens),
                `$${fixed(s.costUsd)}`,
              ],
            ]
          : [],
      ),
    ]),
  );
  const shown = report.rows.slice(0, examples);
  if (shown.length > 0) {
    out.push('', `first ${shown.length} of ${count(report.rows.length)} examples:`);
    for (const row of shown) {
      const verdict =
        row.equivalent === undefined ? '' : `, ${row.equivalent ? 'equivalent' : 'not equivalent'}`;
      out.push(
        `${row.id}: ROUGE-L F1 ${fixed(row.rougeL.f1)}${row.exact ? ', exact' : ''}${verdict}`,
        `  reference:  ${JSON.stringify(row.reference)}`,
        `  prediction: ${JSON.stringify(row.prediction)}`,
        ...(row.inductionError ? [`  induction failed: ${row.inductionError}`] : []),
        ...(row.judgeError ? [`  not judged: ${row.judgeError}`] : []),
      );
    }
  }
  return `${out.join('\n')}\n`;
}

/**
 * `safer-instruct eval-induction <heldout.jsonl> --model <spec> [options]`: evaluates instruction
 * induction on a held-out split and prints the report, as text or with `--json` as one JSON document.
 * Returns the exit code: 0, 1 when the input, the configuration or a model fails, 2 on a usage error.
 * `deps.models` replaces the model registry (tests); the cache and governors come from the flags.
 */
export async function evalInductionCommand(
  args: readonly string[],
  io: CliIo,
  deps: Partial<Pick<EvaluateInductionDeps, 'models'>> = {},
): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        'judge-model': { type: 'string' },
        config: { type: 'string' },
        prompt: { type: 'string' },
        limit: { type: 'string' },
        examples: { type: 'string' },
        'few-shot': { type: 'string' },
        shots: { type: 'string' },
        json: { type: 'boolean' },
        out: { type: 'string' },
        'cache-dir': { type: 'string' },
        'no-cache': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('eval-induction takes one held-out file');
    const heldout = positionals[0] as string;
    const model = modelSpec('--model', str(values.model));
    if (model === undefined) throw new UsageError('--model <spec> is required');
    const judgeModel = modelSpec('--judge-model', str(values['judge-model']));
    const prompt = str(values.prompt);
    if (prompt !== undefined && !(PROMPTS as readonly string[]).includes(prompt))
      throw new UsageError(`--prompt takes one of ${PROMPTS.join(', ')}, not "${prompt}"`);
    const limit = wholeNumber('--limit', str(values.limit), 1);
    const examples = wholeNumber('--examples', str(values.examples), 0) ?? 5;
    if (values['no-cache'] && values['cache-dir'])
      throw new UsageError('--no-cache and --cache-dir exclude each other');

    const configPath = str(values.config);
    const file: PipelineConfigInput = configPath === undefined ? {} : await loadConfigFile(configPath);
    const fewShotFile = str(values['few-shot']);
    const shots = wholeNumber('--shots', str(values.shots), 1) ?? 4;
    // Examples drawn from a file the held-out split is not part of: drawn from it, they would leak answers.
    const fewShot = fewShotFile === undefined ? undefined : await drawFewShotExamples(fewShotFile, shots);
    const induce = {
      ...file.stages?.induce,
      ...(prompt === undefined ? {} : { prompt }),
      ...(fewShot === undefined ? {} : { examples: fewShot }),
    };
    const config = parseConfig(
      { ...file, stages: { ...file.stages, induce } },
      configPath === undefined ? 'options' : `config ${configPath}`,
    );
    const cache = values['no-cache']
      ? undefined
      : new CallCache(new FsStore(str(values['cache-dir']) ?? join(cacheRoot(), 'calls')), '');
    const models = deps.models ?? new ModelRegistry({ parameters: new SsmParameterStore() });
    let report: InductionEval;
    try {
      report = await evaluateInduction(
        { heldout, model, judgeModel, config, limit, log: (line) => say(`model     ${line}`) },
        { models, cache, governors: new GovernorPool({ sharedByShards: true }) },
      );
    } finally {
      // Only a registry built here is freed here; injected models belong to the caller.
      if (models instanceof ModelRegistry) await models.closeAll();
    }
    const json = `${JSON.stringify(report, null, 2)}\n`;
    const out = str(values.out);
    if (out !== undefined) {
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, json);
    }
    io.stdout.write(values.json ? json : renderInductionEval(report, examples));
    return 0;
  } catch (error) {
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    say(`safer-instruct: ${firstLine(error)}`);
    if (usage) say('try: safer-instruct eval-induction --help');
    return usage ? 2 : 1;
  }
}
