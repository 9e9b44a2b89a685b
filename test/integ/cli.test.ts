import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { runLocal } from '../../lib/local/run-local.js';
import type { Pair, Reject } from '../../lib/pipeline/schemas.js';
import { type BedrockFake, preferFakeAnswers, startBedrockFake } from '../support/bedrock-fake.js';
import { captured } from '../support/cli.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

const run = promisify(execFile);
const repo = new URL('../..', import.meta.url).pathname;
const fixture = join(repo, 'test/fixtures/records-60.jsonl');
const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';

/** Runs the CLI in process and captures what it prints. */
const cli = (...args: string[]) => captured(main, args);

describe('safer-instruct run against a Bedrock endpoint', () => {
  let fake: BedrockFake;
  let outDir: string;
  let stderr: string;

  beforeAll(async () => {
    fake = await startBedrockFake({ respond: preferFakeAnswers });
    outDir = tempDir();
    const result = await run(
      process.execPath,
      [
        join(repo, 'bin/safer-instruct.js'),
        'run',
        fixture,
        '--out',
        outDir,
        '--model',
        `bedrock:${HAIKU}`,
        '--shard-size',
        '20',
      ],
      {
        cwd: tempDir(),
        env: {
          ...process.env,
          AWS_ENDPOINT_URL_BEDROCK_RUNTIME: fake.url,
          AWS_ACCESS_KEY_ID: 'AKIDUMMY',
          AWS_SECRET_ACCESS_KEY: 'dummy',
          AWS_REGION: 'us-east-1',
        },
      },
    );
    stderr = result.stderr;
  }, 120_000);

  afterAll(async () => {
    await fake?.close();
  });

  it('stops a run at its budget with a message saying how to go on, and the resume with more finishes it', async () => {
    // Prepare
    const fullCost = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8')).totals.costUsd as number;
    const budgetOut = tempDir();
    const cacheDir = tempDir();
    const options = {
      cwd: tempDir(),
      env: {
        ...process.env,
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME: fake.url,
        AWS_ACCESS_KEY_ID: 'AKIDUMMY',
        AWS_SECRET_ACCESS_KEY: 'dummy',
        AWS_REGION: 'us-east-1',
      },
    };
    const cliPath = join(repo, 'bin/safer-instruct.js');
    const common = ['--out', budgetOut, '--cache-dir', cacheDir];

    // Act
    const stopped = await run(
      process.execPath,
      [
        cliPath,
        'run',
        fixture,
        ...common,
        '--model',
        `bedrock:${HAIKU}`,
        '--shard-size',
        '20',
        '--max-budget',
        String(fullCost / 2),
      ],
      options,
    ).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    const hint =
      /resume with: safer-instruct run --resume (\S+) --out (\S+) --max-budget <a higher budget>/.exec(
        stopped.stderr,
      );
    const resumed = await run(
      process.execPath,
      [cliPath, 'run', '--resume', hint?.[1] ?? '', ...common, '--max-budget', String(fullCost * 2)],
      options,
    );

    // Assess
    expect(stopped.code).toBe(1);
    expect(stopped.stderr).toMatch(
      /safer-instruct: the next model call, at up to \$[\d.]+, would pass the budget of/,
    );
    expect(hint?.[2]).toBe(budgetOut);
    expect(resumed.stderr).toMatch(/done {6}\d+ pairs, \d+ rejects/);
    const report = JSON.parse(readFileSync(join(budgetOut, 'report.json'), 'utf8'));
    expect(report.pairs).toBe(JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8')).pairs);
  }, 120_000);

  it('completes and writes pairs, rejects and a report that account for every record', () => {
    const pairs = readFileSync(join(outDir, 'pairs.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Pair);
    const rejects = readFileSync(join(outDir, 'rejects.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Reject);
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));

    expect(pairs.length + rejects.length).toBe(62);
    expect(pairs.length).toBeGreaterThan(0);
    expect(report.accounting.balanced).toBe(true);
    expect(report.stages.evaluate.costUsd).toBeGreaterThan(0);
    expect(stderr).toMatch(/done {6}\d+ pairs, \d+ rejects/);
    expect(stderr).toMatch(
      new RegExp(
        `calls {5}${report.totals.calls} paid on-demand, 0 from the cache, 0 throttled, \\$0\\.\\d{4}`,
      ),
    );
  });

  it('sends every judge call with a forced tool and the verdict schema', () => {
    const judged = fake.requests.filter((r) => r.hasToolConfig);

    expect(judged.length).toBeGreaterThan(0);
    for (const request of judged) {
      expect(request.modelId).toBe(HAIKU);
      expect(['rate_instruction', 'record_preference']).toContain(request.toolChoice?.tool?.name);
      expect(request.body.toolConfig?.tools?.[0]?.toolSpec?.inputSchema).toHaveProperty(
        'json.properties.score',
      );
    }
  });

  it('pays again for every call with --no-cache, and reuses them without it', async () => {
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_BEDROCK_RUNTIME: fake.url,
      AWS_ACCESS_KEY_ID: 'AKIDUMMY',
      AWS_SECRET_ACCESS_KEY: 'dummy',
      AWS_REGION: 'us-east-1',
    });
    const first = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    const args = [fixture, '--model', `bedrock:${HAIKU}`, '--shard-size', '20'];
    const before = fake.requests.length;

    const uncached = await cli('run', ...args, '--out', tempDir(), '--no-cache');
    const paid = fake.requests.length - before;
    const cached = await cli('run', ...args, '--out', tempDir());

    expect([uncached.code, cached.code]).toEqual([0, 0]);
    expect(paid).toBe(first.totals.calls);
    expect(fake.requests.length - before).toBe(paid);
    expect(cached.err).toMatch(new RegExp(`calls {5}0 paid on-demand, ${first.totals.calls} from the cache`));
  });

  it('sends generation calls without tools', () => {
    const generated = fake.requests.filter((r) => !r.hasToolConfig);

    expect(generated.length).toBeGreaterThan(0);
  });
});

describe('safer-instruct run with bad arguments', () => {
  it('names an unreadable config in one line and exits non-zero', async () => {
    const config = join(tempDir(), 'config.json');
    writeFileSync(config, '{"shardSize": "many"}');

    const result = await cli('run', fixture, '--out', tempDir(), '--config', config);

    expect(result.code).toBe(1);
    expect(result.err.trim().split('\n')).toHaveLength(1);
    expect(result.err).toMatch(/config .*config\.json: shardSize: /);
  });

  it('names a missing input file and exits non-zero', async () => {
    const result = await cli('run', '/nonexistent/input.jsonl', '--out', tempDir());

    expect(result.code).toBe(1);
    expect(result.err).toBe('safer-instruct: /nonexistent/input.jsonl: no such file\n');
  });

  it('rejects an unknown model provider before running anything', async () => {
    const result = await cli('run', fixture, '--out', tempDir(), '--model', 'gpt:4');

    expect(result.code).toBe(1);
    expect(result.err).toMatch(/models\.induce: a model spec is bedrock:<id>/);
  });

  it('names the runs there are when asked to resume a run that is not in the folder', async () => {
    const result = await cli('run', '--resume', 'posts-0123456789', '--out', tempDir());

    expect(result.code).toBe(1);
    expect(result.err).toMatch(/^safer-instruct: no run posts-0123456789 in .* \(no runs there\)\n$/);
  });

  it.each([
    [['run', fixture, '--resume', 'r-1', '--out', 'o'], /give no input file/],
    [
      ['run', '--resume', 'r-1', '--out', 'o', '--model', 'bedrock:x', '--shard-size', '5'],
      /drop --model, --shard-size/,
    ],
    [
      ['run', fixture, '--out', 'o', '--no-cache', '--cache-dir', 'c'],
      /--no-cache and --cache-dir exclude each other/,
    ],
    [['run', fixture, '--out', 'o', '--mode', 'cheap'], /--mode takes on-demand, batch, auto, not "cheap"/],
    [['run', '--resume', 'r-1', '--out', 'o', '--mode', 'batch'], /drop --mode/],
  ])('explains usage for %j', async (args, message) => {
    const result = await cli(...args);

    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
  });

  it('explains usage when --out is missing', async () => {
    const result = await cli('run', fixture);

    expect(result.code).toBe(2);
    expect(result.err).toMatch(/--out <dir> is required/);
  });

  it('names a model file that does not exist in one line, before running anything', async () => {
    const out = tempDir();

    const result = await cli('run', fixture, '--out', out, '--model', 'llama:/nonexistent/model.gguf');

    expect(result.code).toBe(1);
    expect(result.err).toMatch(
      /^model {5}loading llama:\/nonexistent\/model\.gguf\nsafer-instruct: .*\/nonexistent\/model\.gguf[^\n]*\n$/,
    );
  });
});

describe('safer-instruct status, submit and fetch', () => {
  it('prints where a local run stands, stage by stage, on stdout', async () => {
    // Prepare
    const outDir = tempDir();
    const { runId } = await runLocal({
      input: fixture,
      outDir,
      config: fakeConfig({ shardSize: 20, quality: { lengths: { rejected: { max: 2000 } } } }),
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });

    // Act
    const result = await cli('status', runId, '--out', outDir);

    // Assess
    expect(result.code).toBe(0);
    expect(result.out).toMatch(new RegExp(`^run {7}${runId} \\(.*/store/runs/${runId}/\\)$`, 'm'));
    expect(result.out).toMatch(/^state {5}succeeded$/m);
    expect(result.out).toMatch(/^split {5}3\/3 shards, 62 records, 57 kept$/m);
    expect(result.out).toMatch(/^induce {4}3\/3 shards, 56\/56 records, 56 kept, 56 calls, \$0\.\d{4}$/m);
    expect(result.out).toMatch(/^merge {5}56 pairs, 6 rejects$/m);
    expect(result.out).toMatch(/^total {5}224 calls, \$0\.\d{4}$/m);
  });

  it('names an input file that does not exist before asking AWS anything', async () => {
    const result = await cli('submit', '/nonexistent/input.jsonl', '--stack', 'SaferInstruct');

    expect(result.code).toBe(1);
    expect(result.err).toBe('safer-instruct: /nonexistent/input.jsonl: no such file\n');
  });

  it('lists the remote commands in the usage', async () => {
    const result = await cli('--help');

    expect(result.out).toMatch(/safer-instruct submit <input\.jsonl\|input\.csv> --stack <name>/);
    expect(result.out).toMatch(/safer-instruct status <runId> \(--out <dir> \| --stack <name>/);
    expect(result.out).toMatch(/safer-instruct fetch <runId> --stack <name> --out <dir>/);
  });

  it.each([
    [['submit', fixture], /--stack <name> is required/],
    [['submit', fixture, '--stack', 's', '--out', 'o'], /submit takes no --out/],
    [['submit', '--stack', 's'], /submit takes one input file/],
    [['status', 'r-1'], /status reads a local run folder \(--out <dir>\) or a deployed stack/],
    [['status', 'r-1', '--out', 'o', '--stack', 's'], /status reads a local run folder/],
    [['status', 'r-1', '--out', 'o', '--region', 'us-east-1'], /--region goes with --stack/],
    [['status', 'r-1', '--out', 'o', '--no-follow'], /status takes no --no-follow/],
    [['fetch', 'r-1', '--stack', 's'], /--out <dir> is required/],
    [['fetch', '--stack', 's', '--out', 'o'], /fetch takes one run id/],
  ])('explains usage for %j', async (args, message) => {
    const result = await cli(...args);

    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(result.err).toMatch(new RegExp(`try: safer-instruct ${args[0]} --help`));
  });
});
