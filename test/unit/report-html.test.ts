import { describe, expect, it } from 'vitest';
import {
  type ReportHtmlInput,
  ReportTally,
  renderReportHtml,
  SAMPLE_SIZE,
} from '../../lib/pipeline/export/report-html.js';
import { type Pair, type Reject, STAGES, type StageStats } from '../../lib/pipeline/schemas.js';

const HOSTILE = '<script>alert("pwned")</script> & <img src="https://evil.example/x.png" onerror="alert(1)">';

const stage = (inn: number, out: number, costUsd = 0, calls = 0): StageStats => ({
  in: inn,
  out,
  rejected: inn - out,
  calls,
  inputTokens: calls * 100,
  outputTokens: calls * 20,
  costUsd,
  ms: 1,
  cacheHits: 0,
  cacheMisses: calls,
  throttled: 0,
  retries: 0,
});

const pair = (id: string, scores: { filter?: number; evaluate?: number } = {}, text = 'a text'): Pair => ({
  id,
  prompt: `Write about ${text}`,
  chosen: `I will not help with ${text}`,
  rejected: text,
  category: 'harassment',
  metadata: {
    source: 'in.jsonl',
    line: 1,
    stages: Object.fromEntries(
      Object.entries(scores).map(([judge, score]) => [
        judge,
        { model: 'bedrock:fake', template: 'abc', score },
      ]),
    ),
    input: {},
  },
});

const reject = (id: string, stageName: Reject['stage'], reason: string, detail: string): Reject => ({
  id,
  stage: stageName,
  reason,
  detail,
  source: 'in.jsonl',
  line: 2,
});

/** A run of 100 records of which 60 became pairs. */
function input(overrides: Partial<ReportHtmlInput> = {}): ReportHtmlInput {
  return {
    runId: 'run-1',
    mode: 'on-demand',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:10:00.000Z',
    input: { key: 'incoming/in.jsonl', etag: null, records: 100 },
    pairs: 60,
    rejects: 40,
    stages: {
      split: stage(100, 95),
      'dedup-texts': stage(95, 90),
      induce: { ...stage(90, 88, 0.5, 90), batchCostUsd: 0.25 },
      'dedup-instructions': stage(88, 85),
      filter: { ...stage(85, 75, 0.2, 85), batchCostUsd: 0 },
      respond: { ...stage(75, 72, 0.4, 75), batchCostUsd: 0 },
      evaluate: { ...stage(72, 64, 0.3, 72), batchCostUsd: 0 },
      merge: stage(64, 60),
    },
    totals: {
      calls: 322,
      inputTokens: 32_200,
      outputTokens: 6_440,
      costUsd: 1.65,
      cacheHits: 0,
      cacheMisses: 322,
      throttled: 0,
      retries: 0,
    },
    modes: {
      'on-demand': { calls: 322, inputTokens: 32_200, outputTokens: 6_440, costUsd: 1.4 },
      batch: { jobs: 1, calls: 90, inputTokens: 9_000, outputTokens: 1_800, costUsd: 0.25 },
    },
    rejectsByStage: { split: { 'empty-text': 5 }, filter: { 'low-quality-instruction': 10 } },
    failedShards: [],
    models: {
      induce: 'bedrock:fake',
      filter: 'bedrock:fake',
      respond: 'bedrock:fake',
      evaluate: 'bedrock:fake',
    },
    thresholds: { filter: 3, evaluate: 4 },
    templates: { induce: 'h-induce', filter: 'h-filter', respond: 'h-respond', evaluate: 'h-evaluate' },
    scores: {
      filter: { kept: [0, 0, 20, 30, 10], rejected: [4, 6, 0, 0, 0] },
      evaluate: { kept: [0, 0, 0, 25, 35], rejected: [0, 1, 7, 0, 0] },
    },
    samples: [pair('p1', { filter: 4, evaluate: 5 })],
    ...overrides,
  };
}

/** The data attributes of each `rect.bar` of the svg with this id, in document order. */
function bars(html: string, id: string): Record<string, string>[] {
  const svg = new RegExp(`<svg id="${id}"[^>]*>([\\s\\S]*?)</svg>`).exec(html)?.[1];
  if (svg === undefined) throw new Error(`no svg#${id}`);
  return [...svg.matchAll(/<rect class="bar[^"]*"([^>]*)\/>/g)].map((m) =>
    Object.fromEntries([...(m[1] ?? '').matchAll(/data-([a-z]+)="([^"]*)"/g)].map((a) => [a[1], a[2]])),
  );
}

describe('renderReportHtml', () => {
  it('escapes every text from the data, so no script or tag of a record reaches the page', () => {
    // Prepare
    const hostile = input({
      runId: 'run <b>&</b>',
      samples: [{ ...pair(`id ${HOSTILE}`, {}, HOSTILE), category: HOSTILE }],
      rejectsByStage: { filter: { [HOSTILE]: 3 } },
      failedShards: [{ shard: '00001', stage: 'filter', error: HOSTILE }],
    });

    // Act
    const html = renderReportHtml(hostile);

    // Assess
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).not.toContain('<b>');
    expect(html).toContain('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &lt;img');
    expect(html).toContain('run &lt;b&gt;&amp;&lt;/b&gt;');
    expect(bars(html, 'rejects')[0]?.reason).toBe(
      '&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &lt;img src=&quot;https://evil.example/x.png&quot; onerror=&quot;alert(1)&quot;&gt;',
    );
  });

  it('refers to nothing outside the page: no URL, no src or href, no stylesheet import', () => {
    // Prepare
    const run = input();

    // Act
    const html = renderReportHtml(run);

    // Assess
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/<[^>]*\s(src|href|xlink:href|action|srcset|poster)\s*=/i);
    expect(html).not.toMatch(/url\(|@import/i);
    expect(html).toContain("content=\"default-src 'none'; style-src 'unsafe-inline'\"");
  });

  it('draws the funnel as the input records, then what each stage kept, ending with the pairs', () => {
    // Prepare
    const run = input();

    // Act
    const funnel = bars(renderReportHtml(run), 'funnel');

    // Assess
    expect(funnel.map((b) => b.stage)).toEqual(['input', ...STAGES]);
    expect(funnel.map((b) => Number(b.value))).toEqual([100, 95, 90, 88, 85, 75, 72, 64, 60]);
  });

  it('draws a cost bar per model stage of its on-demand plus batch cost', () => {
    // Prepare
    const run = input();

    // Act
    const cost = bars(renderReportHtml(run), 'cost');

    // Assess
    expect(cost.map((b) => [b.stage, Number(b.value)])).toEqual([
      ['induce', 0.75],
      ['filter', 0.2],
      ['respond', 0.4],
      ['evaluate', 0.3],
    ]);
  });

  it('draws each judge histogram as a kept and a rejected bar per score with the counts given', () => {
    // Prepare
    const run = input();

    // Act
    const html = renderReportHtml(run);

    // Assess
    for (const judge of ['filter', 'evaluate'] as const) {
      const drawn = bars(html, `scores-${judge}`);
      expect(drawn).toHaveLength(10);
      for (const series of ['kept', 'rejected'] as const)
        expect(drawn.filter((b) => b.series === series).map((b) => Number(b.value))).toEqual(
          run.scores[judge][series],
        );
    }
  });

  it('lists rejects by stage in pipeline order, reasons by count', () => {
    // Prepare
    const run = input({ rejectsByStage: { filter: { b: 1, a: 4 }, split: { 'empty-text': 5 } } });

    // Act
    const rejects = bars(renderReportHtml(run), 'rejects');

    // Assess
    expect(rejects.map((b) => [b.stage, b.reason, b.value])).toEqual([
      ['split', 'empty-text', '5'],
      ['filter', 'a', '4'],
      ['filter', 'b', '1'],
    ]);
  });

  it('cuts a long sample text and says how much it left off', () => {
    // Prepare
    const run = input({ samples: [pair('long', {}, 'x'.repeat(5000))] });

    // Act
    const html = renderReportHtml(run);

    // Assess
    expect(html).not.toContain('x'.repeat(2001));
    expect(html).toContain('(3,000 more characters)');
  });
});

describe('ReportTally', () => {
  it('counts the judge scores of kept pairs and of the rejects whose detail carries one', () => {
    // Prepare
    const tally = new ReportTally();

    // Act
    tally.addPair(pair('a', { filter: 4, evaluate: 5 }));
    tally.addPair(pair('b', { filter: 4, evaluate: 4 }));
    tally.addReject(reject('c', 'filter', 'low-quality-instruction', 'score 2 < 3: off-topic'));
    tally.addReject(reject('d', 'evaluate', 'low-score', 'score 3 < 4: weak'));
    tally.addReject(
      reject('e', 'evaluate', 'rejected-preferred', 'the judge preferred the rejected text: x'),
    );
    tally.addReject(reject('f', 'filter', 'model-refused', 'score 1 < 3: looks scored but is not'));

    // Assess
    expect(tally.figures().scores).toEqual({
      filter: { kept: [0, 0, 0, 2, 0], rejected: [0, 1, 0, 0, 0] },
      evaluate: { kept: [0, 0, 0, 1, 1], rejected: [0, 0, 1, 0, 0] },
    });
  });

  it('samples the same few pairs whatever order they stream in', () => {
    // Prepare
    const pairs = Array.from({ length: 40 }, (_, i) => pair(`p${i}`));
    const forward = new ReportTally();
    const backward = new ReportTally();

    // Act
    for (const p of pairs) forward.addPair(p);
    for (const p of [...pairs].reverse()) backward.addPair(p);

    // Assess
    const ids = forward.figures().samples.map((p) => p.id);
    expect(ids).toHaveLength(SAMPLE_SIZE);
    expect(backward.figures().samples.map((p) => p.id)).toEqual(ids);
  });
});
