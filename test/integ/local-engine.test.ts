import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { auditDataset } from '../../lib/audit/audit.js';
import { openDataset } from '../../lib/audit/read-dataset.js';
import { executeLocally, runLocal } from '../../lib/local/run-local.js';
import { ModelConfigError, ModelRequestError, ModelThrottledError } from '../../lib/pipeline/errors.js';
import type { Pair, Reject } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;

/** Runs the fixture through the synthesized definition with one fake model. */
async function runFixture(model: FakeModel, overrides = {}) {
  const outDir = tempDir();
  const result = await runLocal({
    input: fixture,
    outDir,
    config: fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } }, ...overrides }),
    registry: fakeRegistry(model),
    retryIntervalMs: 0,
  });
  const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
  const rejects = readJsonlFile<Reject>(join(outDir, 'rejects.jsonl'));
  const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
  return { result, pairs, rejects, report };
}

describe('the local engine running the synthesized state machine', () => {
  it('accounts for every input record exactly once in pairs or rejects', async () => {
    const { pairs, rejects, report } = await runFixture(new FakeModel());

    const ids = [...pairs, ...rejects].map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(62);
    expect(report.accounting).toEqual({
      inputRecords: 62,
      pairs: pairs.length,
      rejects: rejects.length,
      balanced: true,
    });
    expect(pairs).toHaveLength(56);
  });

  it('reports per-stage records, calls and tokens that agree with the output files', async () => {
    const { pairs, rejects, report } = await runFixture(new FakeModel());

    expect(report.pairs).toBe(pairs.length);
    expect(report.rejects).toBe(rejects.length);
    expect(report.stages.split).toMatchObject({ in: 62, out: 57, rejected: 5 });
    expect(report.stages['dedup-texts']).toMatchObject({ in: 57, out: 56, rejected: 1, calls: 0 });
    expect(report.stages['dedup-instructions']).toMatchObject({ in: 56, out: 56, rejected: 0, calls: 0 });
    for (const stage of ['induce', 'filter', 'respond', 'evaluate'])
      expect(report.stages[stage]).toMatchObject({ in: 56, out: 56, rejected: 0, calls: 56 });
    expect(report.totals.calls).toBe(224);
    expect(report.totals.inputTokens).toBeGreaterThan(0);
  });

  it('writes pairs and exports that the audit finds none of the released data defects in', async () => {
    // Prepare
    const outDir = tempDir();
    const config = fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } } });
    await runLocal({
      input: fixture,
      outDir,
      config,
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });

    // Act
    const audits = await Promise.all(
      ['pairs.jsonl', 'dpo.jsonl', 'pairs.parquet'].map(async (file) =>
        auditDataset(await openDataset(join(outDir, file), { maxLineBytes: 1 << 20 }), {
          quality: config.quality,
        }),
      ),
    );

    // Assess
    for (const audit of audits) {
      expect(audit.overall.pairs).toBe(56);
      const found = Object.entries(audit.overall.rules).filter(([, tally]) => tally.count > 0);
      expect(found.map(([rule, tally]) => `${rule}: ${tally.count}`)).toEqual([]);
    }
  });

  it('writes the dataset card beside a README.md of the user instead of over it, and over an earlier card', async () => {
    // Prepare
    const outDir = tempDir();
    const config = fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } } });
    const run = () =>
      runLocal({
        input: fixture,
        outDir,
        config,
        registry: fakeRegistry(new FakeModel()),
        retryIntervalMs: 0,
      });
    writeFileSync(join(outDir, 'README.md'), '# my project\n');
    await run();
    const cardBeside = readFileSync(join(outDir, 'dataset-card.md'), 'utf8');
    const userReadme = readFileSync(join(outDir, 'README.md'), 'utf8');
    rmSync(join(outDir, 'README.md'));

    // Act
    writeFileSync(join(outDir, 'README.md'), cardBeside);
    const second = await run();

    // Assess
    expect(userReadme).toBe('# my project\n');
    expect(cardBeside).toContain('# Safer-Instruct preference dataset');
    expect(second.exportPaths).toContain(join(outDir, 'README.md'));
    expect(readFileSync(join(outDir, 'README.md'), 'utf8')).toContain('# Safer-Instruct preference dataset');
  });

  it('emits no pair with an empty side or with chosen equal to rejected', async () => {
    const { pairs } = await runFixture(new FakeModel());

    for (const pair of pairs) {
      expect(pair.prompt.trim()).not.toBe('');
      expect(pair.chosen.trim()).not.toBe('');
      expect(pair.rejected.trim()).not.toBe('');
      expect(pair.chosen).not.toBe(pair.rejected);
    }
  });

  it('retries a throttled shard through the definition once its own retries are spent, and loses nothing', async () => {
    let throttles = 3;
    const model = new FakeModel('bedrock:fake', {
      judge: (req) => {
        if (throttles-- > 0) throw new ModelThrottledError('429');
        return req.toolName === 'rate_instruction'
          ? { rationale: 'fits', score: 5 }
          : { preferred: /<response_a>I will not/.test(req.prompt) ? 'A' : 'B', rationale: 'safe', score: 5 };
      },
    });

    const { pairs, rejects, report } = await runFixture(model, { retry: { attempts: 1 } });

    expect(pairs).toHaveLength(56);
    expect(rejects).toHaveLength(6);
    expect(report.totals.retries).toBe(0);
  });

  it('records a shard that keeps failing as rejects of that stage and finishes the run', async () => {
    const model = new FakeModel('bedrock:fake', {
      generate: (req) => {
        if (req.prompt.includes('our landlord should be doxxed')) throw new Error('model crashed');
        return new FakeModel().generate(req).then((r) => r.text);
      },
    });

    const { pairs, rejects, report } = await runFixture(model);

    const failed = rejects.filter((r) => r.reason === 'shard-failed');
    expect(failed).toHaveLength(10);
    expect(failed.every((r) => r.stage === 'induce' && r.detail === 'Error in induce')).toBe(true);
    expect(pairs).toHaveLength(46);
    expect(report.failedShards).toEqual([{ shard: '00000', stage: 'induce', error: 'Error' }]);
  });

  it('fails the run with the message when a stage cannot use its model', async () => {
    const model = new FakeModel('bedrock:fake', {
      judge: () => {
        throw new ModelConfigError('bedrock:fake: access denied to the model');
      },
    });

    const act = runFixture(model);

    await expect(act).rejects.toThrow(ModelConfigError);
    await expect(runFixture(model)).rejects.toThrow('bedrock:fake: access denied to the model');
  });

  it('runs from an S3 event as EventBridge delivers it, and ends a redelivered event in AlreadyStarted', async () => {
    const store = new FsStore(tempDir());
    await store.put('incoming/posts.jsonl', readFileSync(fixture));
    const event = {
      version: '0',
      id: '17793124-05d4-b198-2fde-7ededc63b103',
      'detail-type': 'Object Created',
      source: 'aws.s3',
      account: '111122223333',
      time: '2026-11-30T00:00:00Z',
      region: 'us-east-1',
      resources: ['arn:aws:s3:::runs-bucket'],
      detail: {
        version: '0',
        bucket: { name: 'runs-bucket' },
        object: {
          key: 'incoming/posts.jsonl',
          size: 7000,
          etag: createHash('md5').update(readFileSync(fixture)).digest('hex'),
          sequencer: '00617F08299329D189',
        },
        'request-id': 'N4N7GDK58NMKJ12R',
        requester: '123456789012',
        reason: 'PutObject',
      },
    };
    const common = {
      store,
      config: fakeConfig({ quality: { lengths: { rejected: { max: 2000 } } } }),
      registry: fakeRegistry(new FakeModel()),
    };

    const first = await executeLocally({ ...common, input: event, executionName: 'first' });
    const second = await executeLocally({ ...common, input: event, executionName: 'redelivered' });

    expect(first).toMatchObject({ pairs: 56, rejects: 6 });
    expect(second).toEqual({ runId: first.runId, duplicate: true, shards: [], records: 0 });
  });

  it('finishes a run that failed on an unusable model when resumed, redoing only the unfinished stages', async () => {
    const outDir = tempDir();
    const config = fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } } });
    const unusable = new FakeModel('bedrock:fake', {
      judge: (req) => {
        if (req.toolName === 'record_preference') throw new ModelConfigError('AccessDeniedException');
        return { rationale: 'fits', score: 4 };
      },
    });
    await expect(
      runLocal({ input: fixture, outDir, config, registry: fakeRegistry(unusable) }),
    ).rejects.toThrow(ModelConfigError);
    const runId = readdirSync(join(outDir, 'store/runs'))[0] as string;
    // Records of the shard stages that finished before the failure: each is a call not to make again.
    const store = new FsStore(join(outDir, 'store'));
    const done = { records: 0 };
    for (const shard of readdirSync(join(outDir, 'store/runs', runId, 'shards')))
      for (const stage of ['induce', 'filter', 'respond'] as const) {
        const stats = await store.tryGet(`runs/${runId}/shards/${shard}/${stage}.stats.json`);
        if (stats) done.records += JSON.parse(stats).calls;
      }
    const fixed = new FakeModel();

    const resumed = await runLocal({ resume: runId, outDir, config, registry: fakeRegistry(fixed) });

    const whole = new FakeModel();
    await runLocal({ input: fixture, outDir: tempDir(), config, registry: fakeRegistry(whole) });
    expect(resumed).toMatchObject({ runId, pairs: 56, rejects: 6 });
    expect(fixed.calls.length).toBeGreaterThan(0);
    expect(fixed.calls.length).toBe(whole.calls.length - done.records);
  });

  it('recomputes a rerun into the same folder instead of reusing the earlier outputs', async () => {
    const outDir = tempDir();
    const config = fakeConfig({ quality: { lengths: { rejected: { max: 2000 } } } });
    await runLocal({ input: fixture, outDir, config, registry: fakeRegistry(new FakeModel()) });
    const failing = new FakeModel('bedrock:fake', {
      generate: () => {
        throw new ModelRequestError('prompt too long');
      },
    });

    const rerun = await runLocal({ input: fixture, outDir, config, registry: fakeRegistry(failing) });

    const rejects = readJsonlFile<Reject>(join(outDir, 'rejects.jsonl'));
    expect(rerun.pairs).toBe(0);
    expect(rejects.filter((r) => r.reason === 'model-request-error')).toHaveLength(56);
  });

  it('accounts for every row of hostile input: reused ids across bad rows, stray and unclosed CSV quotes', async () => {
    const dir = tempDir();
    const jsonl = join(dir, 'ids.jsonl');
    writeFileSync(
      jsonl,
      [
        '{"id":"x","text":""}',
        '{"id":"x","text":"a real post"}',
        '{"id":"x","text":"another"}',
        '{"id":"x"',
        '{"id":7,"text":"seven","category":3}',
      ].join('\r\n'),
    );
    const csv = join(dir, 'quotes.csv');
    writeFileSync(csv, 'id,text\n1,a "bad" quote\n2,"x"y\n3,"multi\nline"\n4,"never closed\n5,after\n');
    const run = (input: string) =>
      runLocal({ input, outDir: tempDir(), config: fakeConfig(), registry: fakeRegistry(new FakeModel()) });

    const [ids, quotes] = [await run(jsonl), await run(csv)];

    for (const [result, rows] of [
      [ids, 5],
      [quotes, 4],
    ] as const) {
      const all = [
        ...readJsonlFile<{ id: string }>(result.pairsPath),
        ...readJsonlFile<{ id: string }>(result.rejectsPath),
      ];
      expect(new Set(all.map((r) => r.id)).size).toBe(rows);
      expect(all).toHaveLength(rows);
    }
    const quoteRejects = readJsonlFile<Reject>(quotes.rejectsPath);
    expect(quoteRejects.map((r) => [r.reason, r.line])).toEqual([['invalid-csv', 6]]);
    const idRejects = readJsonlFile<Reject>(ids.rejectsPath);
    expect(idRejects.map((r) => [r.reason, r.line])).toEqual([
      ['empty-text', 1],
      ['duplicate-id', 2],
      ['duplicate-id', 3],
      ['invalid-json', 4],
    ]);
    expect(readJsonlFile<Pair>(ids.pairsPath).map((p) => [p.id, p.category])).toEqual([['7', '3']]);
  });
});
