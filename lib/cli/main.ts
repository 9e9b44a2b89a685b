import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { parseArgs as ParseArgs } from 'node:util';
import { type LocalRunResult, loadRunConfig, type ProgressEvent, runLocal } from '../local/run-local.js';
import { cacheRoot } from '../pipeline/cache-dir.js';
import {
  DEFAULT_LOCAL_MODEL,
  loadConfigFile,
  modelsOf,
  type PipelineConfigInput,
  parseConfig,
  RUN_MODES,
} from '../pipeline/config.js';
import { InputError } from '../pipeline/errors.js';
import { CallCache } from '../pipeline/models/call-cache.js';
import { ModelRegistry } from '../pipeline/models/registry.js';
import { SsmParameterStore } from '../pipeline/parameters.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import { drawFewShotExamples } from '../reverse/few-shot.js';
import { auditCommand } from './audit-command.js';
import { evalInductionCommand } from './eval-induction-command.js';
import { reverseDataCommand } from './reverse-data-command.js';

/** Where the CLI writes, and the argument parser it uses; injectable for tests. */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly parseArgs: typeof ParseArgs;
}

const USAGE = `Usage: safer-instruct run <input.jsonl|input.csv> --out <dir> [options]
       safer-instruct run --resume <runId> --out <dir>
       safer-instruct audit <dataset> [--json] [--fail-on <rule>=<max-rate>]  (see audit --help)
       safer-instruct reverse-data <dataset...> --out <file> --format <target>  (see reverse-data --help)
       safer-instruct eval-induction <heldout.jsonl> --model <spec> [--judge-model <spec>]  (see its --help)

Builds preference pairs (prompt, chosen, rejected) from unlabeled texts with the Safer-Instruct
method, running the deployed state machine locally.

Options:
  --out <dir>              where pairs.jsonl, rejects.jsonl and report.json go (required)
  --config <file>          a JSON pipeline configuration
  --model <spec>           the model of every stage (default ${DEFAULT_LOCAL_MODEL})
  --induce-model <spec>    the model that writes instructions
  --judge-model <spec>     the model that filters instructions and evaluates pairs
  --respond-model <spec>   the model that writes chosen responses
  --text-field <name>      the field or column holding the text (default text)
  --category-field <name>  the field or column holding the category (default category)
  --id-field <name>        the field or column holding a record id (default id)
  --format <jsonl|csv>     the input format (default: from the file extension)
  --few-shot <file>        draw the examples of few-shot induction from reverse-data's training
                           output or an instruction dataset (Alpaca, Dolly, ShareGPT, messages); not
                           from a held-out split that eval-induction will score
  --shots <n>              how many examples --few-shot draws (default 4)
  --shard-size <n>         records per shard (default 50)
  --concurrency <n>        shards in flight at once (default 4)
  --mode <mode>            on-demand (default), batch (Bedrock batch jobs, about half the price,
                           within hours) or auto (batch for stages with many calls)
  --resume <runId>         continue a run in <dir> that stopped: finished stages are kept and
                           answered calls come from the cache (the run keeps its configuration)
  --cache-dir <dir>        where answered model calls are kept, shared by all runs
                           (default ${join(cacheRoot(), 'calls')})
  --no-cache               neither read nor write the call cache for this run

A model spec is bedrock:<modelId or ARN> (Converse), bedrock-custom:<ARN>[#llama|titan|cohere|mistral|completion]
(InvokeModel with the raw prompt, for custom and imported models), sagemaker:<endpoint>[#tgi|messages],
openai:<baseURL>#<model>, llama:<file.gguf|hf:URI>, or ssm:<parameter> (the model ReverseTuning recorded).`;

/** The run totals the last lines print, from report.json. */
interface RunTotals {
  readonly calls: number;
  readonly cacheHits: number;
  readonly throttled: number;
  readonly costUsd: number;
}

/** The flags a resumed run takes; the rest are part of the run's frozen configuration. */
const RESUME_FLAGS = new Set(['resume', 'out', 'cache-dir', 'no-cache', 'help']);

class UsageError extends Error {
  override name = 'UsageError';
}

const positiveInt = (flag: string, value: string | undefined) => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`${flag} takes a whole number of at least 1, not "${value}"`);
  return n;
};

const runMode = (value: string | undefined) => {
  if (value === undefined) return undefined;
  const mode = RUN_MODES.find((m) => m === value);
  if (mode === undefined) throw new UsageError(`--mode takes ${RUN_MODES.join(', ')}, not "${value}"`);
  return mode;
};

/** Builds the run's configuration: defaults, then the config file, then flags. */
export async function configFrom(values: Record<string, string | boolean | undefined>) {
  const file: PipelineConfigInput =
    typeof values.config === 'string' ? await loadConfigFile(values.config) : {};
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const base = str('model');
  const fileModels = file.models;
  const fewShotFile = str('few-shot');
  const fewShot = fewShotFile
    ? await drawFewShotExamples(fewShotFile, positiveInt('--shots', str('shots')) ?? 4)
    : undefined;
  const pick = (stage: 'induce' | 'filter' | 'respond' | 'evaluate', flag?: string) =>
    (flag ? str(flag) : undefined) ?? base ?? fileModels?.[stage] ?? DEFAULT_LOCAL_MODEL;
  const raw = {
    ...file,
    models: {
      induce: pick('induce', 'induce-model'),
      filter: pick('filter', 'judge-model'),
      respond: pick('respond', 'respond-model'),
      evaluate: pick('evaluate', 'judge-model'),
    },
    input: {
      ...file.input,
      ...(str('text-field') ? { textField: str('text-field') } : {}),
      ...(str('category-field') ? { categoryField: str('category-field') } : {}),
      ...(str('id-field') ? { idField: str('id-field') } : {}),
      ...(str('format') ? { format: str('format') } : {}),
    },
    ...(fewShot ? { stages: { ...file.stages, induce: { ...file.stages?.induce, examples: fewShot } } } : {}),
    ...(str('shard-size') ? { shardSize: positiveInt('--shard-size', str('shard-size')) } : {}),
    ...(str('concurrency') ? { concurrency: positiveInt('--concurrency', str('concurrency')) } : {}),
    ...(str('mode') ? { mode: runMode(str('mode')) } : {}),
  };
  return parseConfig(raw, typeof values.config === 'string' ? `config ${values.config}` : 'options');
}

/** A progress printer: one line per event, with per-stage counts of shards done. */
function progressPrinter(write: (line: string) => void) {
  let shards = 0;
  const done = new Map<string, { shards: number; kept: number }>();
  return (event: ProgressEvent) => {
    if (event.type === 'split') {
      shards = event.shards;
      write(`split     ${event.records} records -> ${event.shards} shards (run ${event.runId})`);
    } else if (event.type === 'stage') {
      if (event.stage === 'merge') return;
      if (event.stage.startsWith('batch-')) {
        const what =
          event.stage === 'batch-plan'
            ? event.records > 0
              ? `${event.records} jobs planned`
              : `no batch jobs, on-demand (why: report.json batch.${event.shard}.reason)`
            : event.stage === 'batch-join'
              ? `${event.records} answers joined`
              : 'submitted';
        write(`batch     ${event.shard}: ${what} (${event.ms} ms)`);
        return;
      }
      if (event.stage.startsWith('dedup')) {
        write(`${event.stage.padEnd(9)} ${event.records} records go on (${event.ms} ms)`);
        return;
      }
      const d = done.get(event.stage) ?? { shards: 0, kept: 0 };
      d.shards++;
      d.kept += event.records;
      done.set(event.stage, d);
      write(
        `${event.stage.padEnd(9)} shard ${d.shards}/${shards} done, ${d.kept} kept so far (${event.ms} ms)`,
      );
    } else
      write(
        `${event.stage.padEnd(9)} shard ${event.shard} failed: ${event.error}: ${event.message.slice(0, 200)} ` +
          '(retried or recorded)',
      );
  };
}

/** The first line of an error's message: the named errors carry the whole story in it. */
const messageOf = (error: unknown): string =>
  ((error as { message?: string })?.message ?? String(error)).split('\n')[0] || 'unknown error';

/** The command line. Returns the exit code. */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  if (command === 'audit') return auditCommand(rest, io);
  if (command === 'reverse-data') return reverseDataCommand(rest, io);
  if (command === 'eval-induction') return evalInductionCommand(rest, io);
  if (command !== 'run') {
    say(`safer-instruct: unknown command "${command}"; try: safer-instruct run --help`);
    return 2;
  }
  let started: { runId: string; out: string } | undefined;
  try {
    const { values, positionals } = io.parseArgs({
      args: [...rest],
      allowPositionals: true,
      options: {
        out: { type: 'string' },
        config: { type: 'string' },
        model: { type: 'string' },
        'induce-model': { type: 'string' },
        'judge-model': { type: 'string' },
        'respond-model': { type: 'string' },
        'text-field': { type: 'string' },
        'category-field': { type: 'string' },
        'id-field': { type: 'string' },
        format: { type: 'string' },
        'shard-size': { type: 'string' },
        'few-shot': { type: 'string' },
        shots: { type: 'string' },
        concurrency: { type: 'string' },
        mode: { type: 'string' },
        resume: { type: 'string' },
        'cache-dir': { type: 'string' },
        'no-cache': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const resume = values.resume;
    if (resume !== undefined && positionals.length > 0)
      throw new UsageError('--resume continues a run from its stored input; give no input file');
    const fixedByTheRun = Object.keys(values).filter((flag) => !RESUME_FLAGS.has(flag));
    if (resume !== undefined && fixedByTheRun.length > 0)
      throw new UsageError(
        `a resumed run keeps the configuration it started with; drop ${fixedByTheRun.map((f) => `--${f}`).join(', ')}`,
      );
    if (resume === undefined && positionals.length !== 1) throw new UsageError('run takes one input file');
    if (!values.out) throw new UsageError('--out <dir> is required');
    if (values['no-cache'] && values['cache-dir'])
      throw new UsageError('--no-cache and --cache-dir exclude each other');
    const config = resume === undefined ? await configFrom(values) : await loadRunConfig(values.out, resume);
    if (values['no-cache'] && config.mode !== 'on-demand')
      throw new UsageError(
        `--no-cache runs on-demand only: mode ${config.mode} puts batch answers in the call cache`,
      );
    const input = positionals[0];
    if (input !== undefined && !(await stat(input).catch(() => undefined))?.isFile())
      throw new InputError(`${input}: no such file`);
    const cache = values['no-cache']
      ? undefined
      : new CallCache(new FsStore(values['cache-dir'] ?? join(cacheRoot(), 'calls')), '');
    const print = progressPrinter(say);
    // An ssm: spec names the model ReverseTuning recorded in the account: read it there.
    const parameters = new SsmParameterStore();
    const registry = new ModelRegistry({ parameters });
    let result: LocalRunResult;
    try {
      // Fetch and load in-process models before the run, so a missing model stops it at once.
      for (const spec of modelsOf(config)) {
        const client = await registry.get(spec);
        if (client.warmUp) {
          say(`model     loading ${spec}`);
          await client.warmUp();
        }
      }
      result = await runLocal({
        input,
        resume,
        cache,
        outDir: values.out,
        config,
        registry,
        parameters,
        onProgress: (event) => {
          if (event.type === 'split') started = { runId: event.runId, out: values.out as string };
          print(event);
        },
      });
    } finally {
      await registry.closeAll();
    }
    if (result.duplicate) {
      say(`run ${result.runId} was already started for this input; nothing to do`);
      return 0;
    }
    const { totals, modes } = JSON.parse(await readFile(result.reportPath, 'utf8')) as {
      totals: RunTotals;
      modes: { batch: { jobs: number; calls: number } };
    };
    say(`done      ${result.pairs} pairs, ${result.rejects} rejects (run ${result.runId})`);
    const batched = modes.batch.calls;
    const byJobs = batched > 0 ? `${batched} by ${modes.batch.jobs} batch jobs, ` : '';
    say(
      `calls     ${totals.calls - batched} paid on-demand, ${byJobs}${totals.cacheHits} from the cache, ` +
        `${totals.throttled} throttled, $${totals.costUsd.toFixed(4)}`,
    );
    io.stdout.write(
      `${[result.pairsPath, result.rejectsPath, result.reportPath, ...result.exportPaths].join('\n')}\n`,
    );
    return 0;
  } catch (error) {
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    say(`safer-instruct: ${messageOf(error)}`);
    if (usage) say('try: safer-instruct run --help');
    else if (started) say(`resume with: safer-instruct run --resume ${started.runId} --out ${started.out}`);
    return usage ? 2 : 1;
  }
}
