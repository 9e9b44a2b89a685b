import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import type { Pair } from '../../lib/pipeline/schemas.js';
import { STAGES } from '../../lib/pipeline/schemas.js';
import { FAKE_SAFE_PREFIX, FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;
/** Would retitle the page if a record's text reached it as markup instead of text. */
const INJECTED = '<script>document.title = "pwned"</script> & <b>bold</b>';

const between = (text: string, tag: string) =>
  new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(text)?.[1]?.trim() ?? '';
const spread = (text: string, from: number) =>
  from + ((createHash('sha256').update(text).digest()[0] ?? 0) % (6 - from));

/** The fake model, with judges whose scores spread over 1-5, so that each histogram has kept and rejected bars. */
const scatteredJudge = () =>
  new FakeModel('bedrock:fake', {
    judge: (req) =>
      req.toolName === 'record_preference'
        ? {
            preferred: between(req.prompt, 'response_a').startsWith(FAKE_SAFE_PREFIX) ? 'A' : 'B',
            rationale: 'It declines and offers a safe alternative.',
            score: spread(req.prompt, 2),
          }
        : { rationale: 'The instruction fits the text.', score: spread(req.prompt, 1) },
  });

/** The fixture with markup in every text, written to `dir`; lines that are not records stay as they are. */
function hostileFixture(dir: string): string {
  const withMarkup = (line: string): string => {
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      return line;
    }
    if (typeof record !== 'object' || record === null || !('text' in record)) return line;
    const { text } = record;
    return typeof text === 'string' && text.trim()
      ? JSON.stringify({ ...record, text: `${text} ${INJECTED}` })
      : line;
  };
  const path = join(dir, 'records-hostile.jsonl');
  writeFileSync(path, readFileSync(fixture, 'utf8').split('\n').map(withMarkup).join('\n'));
  return path;
}

describe('report.html in a browser', () => {
  it('draws every chart from the run, loads nothing from the network and shows record markup as text', async () => {
    // Prepare
    const outDir = tempDir();
    await runLocal({
      input: hostileFixture(tempDir()),
      outDir,
      config: fakeConfig({
        shardSize: 10,
        quality: { lengths: { rejected: { max: 2000 } } },
        prices: { 'bedrock:fake': { inputPer1k: 1, outputPer1k: 2 } },
      }),
      registry: fakeRegistry(scatteredJudge()),
      retryIntervalMs: 0,
    });
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    const page = pathToFileURL(join(outDir, 'report.html')).href;
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    try {
      const context = await browser.newContext();
      const requests: string[] = [];
      context.on('request', (request) => requests.push(request.url()));
      await context.route('**/*', (route) =>
        route.request().url() === page ? route.continue() : route.abort('blockedbyclient'),
      );
      const tab = await context.newPage();
      const errors: string[] = [];
      tab.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      tab.on('pageerror', (error) => errors.push(error.message));

      // Act
      await tab.goto(page, { waitUntil: 'load' });

      // Assess
      const expectedBars: Record<string, number> = {
        funnel: 1 + STAGES.length,
        rejects: Object.values(report.rejectsByStage as Record<string, object>).reduce(
          (n, reasons) => n + Object.keys(reasons).length,
          0,
        ),
        cost: 4,
        'scores-filter': 10,
        'scores-evaluate': 10,
      };
      for (const [id, expected] of Object.entries(expectedBars)) {
        const bars = tab.locator(`svg#${id} rect.bar`);
        expect(await tab.locator(`svg#${id}`).isVisible(), id).toBe(true);
        expect(await bars.count(), id).toBe(expected);
        let drawn = 0;
        for (const bar of await bars.all()) {
          if (Number(await bar.getAttribute('data-value')) <= 0) continue;
          const box = await bar.boundingBox();
          expect(box?.width, id).toBeGreaterThan(0);
          expect(box?.height, id).toBeGreaterThan(0);
          drawn++;
        }
        expect(drawn, id).toBeGreaterThan(0);
      }
      const funnel = tab.locator('svg#funnel rect.bar');
      expect(await funnel.first().getAttribute('data-stage')).toBe('input');
      expect(Number(await funnel.first().getAttribute('data-value'))).toBe(report.input.records);
      expect(Number(await funnel.last().getAttribute('data-value'))).toBe(pairs.length);
      const widths = await Promise.all(
        (await funnel.all()).map(async (bar) => (await bar.boundingBox())?.width),
      );
      expect(Math.max(...widths.map(Number))).toBe(widths[0]);
      for (const [judge, series] of [
        ['filter', 'rejected'],
        ['evaluate', 'kept'],
      ] as const) {
        const values = await tab
          .locator(`svg#scores-${judge} rect.bar.${series}`)
          .evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('data-value'))));
        expect(values.filter((v) => v > 0).length, `${judge} ${series}`).toBeGreaterThan(1);
      }
      const evaluateKept = await tab
        .locator('svg#scores-evaluate rect.bar.kept')
        .evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('data-value'))));
      expect(evaluateKept).toEqual(
        [1, 2, 3, 4, 5].map((s) => pairs.filter((p) => p.metadata.stages.evaluate?.score === s).length),
      );
      expect(await tab.locator('article.sample').count()).toBe(5);
      expect(await tab.locator('script, b, img, link, iframe').count()).toBe(0);
      expect(await tab.title()).not.toContain('pwned');
      expect(await tab.locator('article.sample pre.text').first().textContent()).toBeTruthy();
      expect(await tab.locator('body').textContent()).toContain(INJECTED);
      expect(requests.filter((url) => url !== page)).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 180_000);
});
