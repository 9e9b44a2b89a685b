import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { parseArgs as ParseArgs } from 'node:util';
import { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { S3Client } from '@aws-sdk/client-s3';
import { SFNClient } from '@aws-sdk/client-sfn';
import { type LocalRunResult, loadRunConfig, runLocal } from '../local/run-local.js';
import { cacheRoot } from '../pipeline/cache-dir.js';
import {
  DEFAULT_LOCAL_MODEL,
  loadConfigFile,
  modelsOf,
  type PipelineConfigInput,
  parseConfig,
  RUN_MODES,
} from '../pipeline/config.js';
import { BudgetExceededError, InputError } from '../pipeline/errors.js';
import { CallCache } from '../pipeline/models/call-cache.js';
import { ModelRegistry } from '../pipeline/models/registry.js';
import { SsmParameterStore } from '../pipeline/parameters.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import { drawFewShotExamples } from '../reverse/few-shot.js';
import { auditCommand } from './audit-command.js';
import { estimateCommand } from './estimate-command.js';
import { evalInductionCommand } from './eval-induction-command.js';
import { formatStage, localProgress, ProgressRenderer } from './progress.js';
import { failureOf, fetchRun, type RemoteClients, runStatus, submitRun } from './remote.js';
import { reverseDataCommand } from './reverse-data-command.js';

/** Where the CLI writes, and the argument parser it uses; injectable for tests. */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly parseArgs: typeof ParseArgs;
}

const USAGE = `Usage: safer-instruct run <input.jsonl|input.csv> --out <dir> [options]
       safer-instruct run --resume <runId> --out <dir> [--max-budget <usd>]
       safer-instruct estimate <input.jsonl|input.csv> [options]  (see estimate --help)
       safer-instruct submit <input.jsonl|input.csv> --stack <name> [--region <r>] [--no-follow]
       safer-instruct status <runId> (--out <dir> | --stack <name> [--region <r>])
       safer-instruct fetch <runId> --stack <name> --out <dir> [--region <r>]
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
  --max-budget <usd>       stop before a paid model call would take the run past this many dollars;
                           everything written is kept, and --resume (with a higher budget) goes on
  --resume <runId>         continue a run in <dir> that stopped: finished stages are kept and
                           answered calls come from the cache (the run keeps its configuration)
  --cache-dir <dir>        where answered model calls are kept, shared by all runs
                           (default ${join(cacheRoot(), 'calls')})
  --no-cache               neither read nor write the call cache for this run

Remote runs, on the deployed stack (npx cdk deploy):
  submit                   uploads the input under incoming/ of the stack's bucket, which starts a run;
                           follows its execution stage by stage and prints the run id (stdout), its
                           status and where its outputs are; exits non-zero when the run fails
  status                   where a run stands, stage by stage: shards done, records, calls, cost; of a
                           local run folder (--out) or in the stack (--stack)
  fetch                    downloads the run's runs/<runId>/output/ files into --out
  --stack <name>           the deployed stack (SaferInstruct unless renamed)
  --region <r>             its region (default: the AWS SDK's, e.g. AWS_REGION)
  --no-follow              submit returns once the execution has started

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
const RESUME_FLAGS = new Set(['resume', 'out', 'cache-dir', 'no-cache', 'max-budget', 'help']);

/** The flags `configFrom` reads into a run's configuration, shared by `run` and `estimate`. */
export const CONFIG_OPTIONS = {
  config: { type: 'string' },
  model: { type: 'string' },
  'induce-model': { type: 'string' },
  'judge-model': { type: 'string' },
  'respond-model': { type: 'string' },
  'text-field': { type: 'string' },
  'category-field': { type: 'string' },
  'id-field': { type: 'string' },
  format: { type: 'string' },
  'few-shot': { type: 'string' },
  shots: { type: 'string' },
} as const;

/** The `--max-budget` in dollars, or undefined without it. */
function budgetOf(value: string | boolean | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const usd = Number(value);
  if (value.trim() === '' || !Number.isFinite(usd) || usd < 0)
    throw new UsageError(`--max-budget takes dollars, a number of at least 0, not "${value}"`);
  return usd;
}

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
  if (command === 'estimate') return estimateCommand(rest, io);
  if (command === 'reverse-data') return reverseDataCommand(rest, io);
  if (command === 'eval-induction') return evalInductionCommand(rest, io);
  if (command === 'submit' || command === 'status' || command === 'fetch')
    return remoteCommand(command, rest, io);
  if (command !== 'run') {
    say(`safer-instruct: unknown command "${command}"; try: safer-instruct run --help`);
    return 2;
  }
  let started: { runId: string; out: string } | undefined;
  const progress = new ProgressRenderer(io.stderr);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...rest],
      allowPositionals: true,
      options: {
        out: { type: 'string' },
        ...CONFIG_OPTIONS,
        'shard-size': { type: 'string' },
        concurrency: { type: 'string' },
        mode: { type: 'string' },
        'max-budget': { type: 'string' },
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
    const maxBudgetUsd = budgetOf(values['max-budget']);
    // Emulated batch jobs answer with the model directly, past the budget's check.
    if (maxBudgetUsd !== undefined && config.mode !== 'on-demand')
      throw new UsageError(`--max-budget runs on-demand only, not in mode ${config.mode}`);
    const input = positionals[0];
    if (input !== undefined && !(await stat(input).catch(() => undefined))?.isFile())
      throw new InputError(`${input}: no such file`);
    const cache = values['no-cache']
      ? undefined
      : new CallCache(new FsStore(values['cache-dir'] ?? join(cacheRoot(), 'calls')), '');
    const print = localProgress(progress);
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
        maxBudgetUsd,
        onProgress: (event) => {
          if (event.type === 'split') started = { runId: event.runId, out: values.out as string };
          print(event);
        },
      });
    } finally {
      progress.end();
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
    else if (started) {
      const raise = error instanceof BudgetExceededError ? ' --max-budget <a higher budget>' : '';
      say(`resume with: safer-instruct run --resume ${started.runId} --out ${started.out}${raise}`);
    }
    return usage ? 2 : 1;
  }
}

/** The AWS clients of the remote commands, in `region` or the SDK's default one. */
const remoteClients = (region: string | undefined): RemoteClients => {
  const config = region ? { region } : {};
  return { s3: new S3Client(config), sfn: new SFNClient(config), cfn: new CloudFormationClient(config) };
};

/** The flags each remote command takes; the others are refused, not ignored. */
const REMOTE_FLAGS: Readonly<Record<'submit' | 'status' | 'fetch', readonly string[]>> = {
  submit: ['stack', 'region', 'no-follow'],
  status: ['stack', 'region', 'out'],
  fetch: ['stack', 'region', 'out'],
};

/** `submit`, `status` and `fetch`: runs on the deployed stack, and where a run stands. Returns the exit code. */
async function remoteCommand(
  command: 'submit' | 'status' | 'fetch',
  args: readonly string[],
  io: CliIo,
): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  const print = (line: string) => io.stdout.write(`${line}\n`);
  const progress = new ProgressRenderer(io.stderr);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        stack: { type: 'string' },
        region: { type: 'string' },
        out: { type: 'string' },
        'no-follow': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const refused = Object.keys(values).filter((flag) => !REMOTE_FLAGS[command].includes(flag));
    if (refused.length > 0)
      throw new UsageError(`${command} takes no ${refused.map((f) => `--${f}`).join(', ')}`);
    const [target] = positionals;
    if (target === undefined || positionals.length !== 1)
      throw new UsageError(
        command === 'submit' ? 'submit takes one input file' : `${command} takes one run id`,
      );
    const { stack, out, region } = values;
    if (command === 'status' && (stack === undefined) === (out === undefined))
      throw new UsageError(
        'status reads a local run folder (--out <dir>) or a deployed stack (--stack <name>)',
      );
    if (command === 'status' && region !== undefined && stack === undefined)
      throw new UsageError('--region goes with --stack');
    if (command !== 'status' && stack === undefined) throw new UsageError('--stack <name> is required');
    if (command === 'fetch' && out === undefined) throw new UsageError('--out <dir> is required');

    if (command === 'submit') {
      const outcome = await submitRun(
        { input: target, stack: stack as string, follow: !values['no-follow'], progress },
        remoteClients(region),
      );
      progress.end();
      print(outcome.runId);
      say(`run       ${outcome.runId}`);
      if (values['no-follow']) {
        say(`status    ${outcome.status} (see: safer-instruct status ${outcome.runId} --stack ${stack})`);
        return 0;
      }
      const counts =
        outcome.pairs === undefined ? '' : `: ${outcome.pairs} pairs, ${outcome.rejects} rejects`;
      const why = failureOf(outcome.error, outcome.cause);
      say(`status    ${outcome.status}${outcome.status === 'SUCCEEDED' ? counts : why ? `: ${why}` : ''}`);
      // The task that failed, when the execution's own error does not say it already (a Fail state's).
      if (outcome.failedTask && !outcome.failedTask.endsWith(why)) say(`failed    ${outcome.failedTask}`);
      say(
        `outputs   ${outcome.outputs} (fetch with: safer-instruct fetch ${outcome.runId} --stack ${stack} --out <dir>)`,
      );
      return outcome.status === 'SUCCEEDED' ? 0 : 1;
    }

    if (command === 'status') {
      const status = await runStatus(
        { runId: target, ...(out === undefined ? { stack } : { out }) },
        out === undefined ? remoteClients(region) : undefined,
      );
      const { execution } = status;
      const why = execution ? failureOf(execution.error, execution.cause) : '';
      print(`run       ${status.runId} (${status.where})`);
      print(
        `state     ${status.state}` +
          (execution ? ` (execution ${execution.arn}: ${execution.status}${why ? `: ${why}` : ''})` : '') +
          (status.state === 'incomplete'
            ? `: running, or stopped (resume with: safer-instruct run --resume ${status.runId} --out ${out})`
            : ''),
      );
      for (const stage of status.stages) print(formatStage(stage));
      print(`total     ${status.calls} calls, $${status.costUsd.toFixed(4)}`);
      return 0;
    }

    const files = await fetchRun(
      { runId: target, stack: stack as string, out: out as string },
      remoteClients(region),
    );
    for (const file of files) print(file);
    say(`fetched   ${files.length} files of run ${target}`);
    return 0;
  } catch (error) {
    progress.end();
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    say(`safer-instruct: ${messageOf(error)}`);
    if (usage) say(`try: safer-instruct ${command} --help`);
    return usage ? 2 : 1;
  }
}
