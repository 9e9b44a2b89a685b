import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { formatStage, localProgress, ProgressRenderer } from '../../lib/cli/progress.js';

/** A stderr stand-in that keeps what is written, a terminal or not. */
const fakeStream = (isTTY: boolean, columns?: number) => {
  const chunks: string[] = [];
  return {
    isTTY,
    columns,
    chunks,
    write(chunk: string) {
      chunks.push(chunk);
      return true;
    },
    get text() {
      return chunks.join('');
    },
  };
};

/** A clock the test moves. */
const fakeClock = (start = 1_000_000) => {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
};

const CURSOR = '\x1b[';

describe('formatStage', () => {
  it('writes shards, records of their total, kept, calls, rate and cost in one line', () => {
    const line = formatStage({
      stage: 'induce',
      shards: { done: 12, total: 66, failed: 1, running: 4 },
      records: { done: 540, total: 3000 },
      kept: 530,
      calls: 1234,
      rate: 45,
      costUsd: 0.12345,
    });

    expect(line).toBe(
      'induce    12/66 shards (1 failed), 4 running, 540/3000 records, 530 kept, 1234 calls, 45.0 records/s, $0.1235',
    );
  });

  it('leaves out the figures not known yet and counts a batch step in jobs', () => {
    expect(formatStage({ stage: 'batch-filter', shards: { done: 1, total: 3 } })).toBe(
      'batch-filter 1/3 jobs',
    );
    expect(formatStage({ stage: 'merge', note: 'running' })).toBe('merge     running');
  });
});

describe('the progress renderer off a terminal', () => {
  it('prints the lines the run command has always printed, with no cursor movements', () => {
    // Prepare
    const stream = fakeStream(false);
    const clock = fakeClock();
    const print = localProgress(new ProgressRenderer(stream, { now: clock.now }), clock.now);

    // Act
    print({ type: 'split', runId: 'posts-0123456789', shards: 2, records: 40 });
    print({ type: 'stage', stage: 'dedup-texts', shard: '', records: 38, ms: 5 });
    print({ type: 'stage', stage: 'induce', shard: '00000', records: 19, ms: 120 });
    print({
      type: 'stage-error',
      stage: 'induce',
      shard: '00001',
      error: 'ModelThrottledError',
      message: '429',
    });
    print({ type: 'stage', stage: 'batch-plan', shard: 'filter', records: 2, ms: 3 });
    print({ type: 'stage', stage: 'merge', shard: '', records: 0, ms: 9 });

    // Assess
    expect(stream.text).toBe(
      [
        'split     40 records -> 2 shards (run posts-0123456789)',
        'dedup-texts 38 records go on (5 ms)',
        'induce    shard 1/2 done, 19 kept so far (120 ms)',
        'induce    shard 00001 failed: ModelThrottledError: 429 (retried or recorded)',
        'batch     filter: 2 jobs planned (3 ms)',
        '',
      ].join('\n'),
    );
    expect(stream.text).not.toContain(CURSOR);
  });

  it('adds calls and cost to a shard line when the event carries them', () => {
    const stream = fakeStream(false);
    const print = localProgress(new ProgressRenderer(stream));

    print({ type: 'split', runId: 'r', shards: 1, records: 10 });
    print({
      type: 'stage',
      stage: 'filter',
      shard: '00000',
      records: 9,
      ms: 50,
      in: 10,
      calls: 10,
      costUsd: 0.002,
    });

    expect(stream.text).toContain('filter    shard 1/1 done, 9 kept so far, 10 calls, $0.0020 (50 ms)\n');
  });
});

describe('the progress renderer on a terminal', () => {
  it('draws one line per stage and redraws them in place, moving the cursor up over the old ones', () => {
    // Prepare
    const stream = fakeStream(true);
    const clock = fakeClock();
    const renderer = new ProgressRenderer(stream, { now: clock.now, intervalMs: 200 });

    // Act
    renderer.update({ stage: 'induce', shards: { done: 1, total: 4 } }, 'not printed on a terminal');
    clock.advance(250);
    renderer.update({ stage: 'filter', shards: { done: 0, total: 4 } });
    clock.advance(250);
    renderer.update({ stage: 'induce', shards: { done: 2, total: 4 } });
    renderer.end();

    // Assess
    expect(stream.chunks).toEqual([
      'induce    1/4 shards\n',
      `${CURSOR}1A\r${CURSOR}0Jinduce    1/4 shards\nfilter    0/4 shards\n`,
      `${CURSOR}2A\r${CURSOR}0Jinduce    2/4 shards\nfilter    0/4 shards\n`,
    ]);
  });

  it('redraws at most once per interval, however many updates come in between', () => {
    // Prepare
    vi.useFakeTimers();
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const stream = fakeStream(true);
    const renderer = new ProgressRenderer(stream, { intervalMs: 200 });

    // Act: an update each 10 ms for half a second
    for (let done = 1; done <= 50; done++) {
      renderer.update({ stage: 'induce', shards: { done, total: 100 } });
      vi.advanceTimersByTime(10);
    }
    const draws = stream.chunks.length;
    renderer.end();

    // Assess: at 0, 200 and 400 ms, then the last figures at the end
    expect(draws).toBe(3);
    expect(stream.chunks).toHaveLength(4);
    expect(stream.chunks.at(-1)).toContain('induce    50/100 shards');
  });

  it('prints a line said once above the stage lines and draws them again below it', () => {
    const stream = fakeStream(true);
    const clock = fakeClock();
    const renderer = new ProgressRenderer(stream, { now: clock.now });
    renderer.update({ stage: 'induce', shards: { done: 1, total: 2 } });

    renderer.say('induce    shard 00001 failed: ModelThrottledError: 429 (retried or recorded)');

    expect(stream.chunks.at(-1)).toBe(
      `${CURSOR}1A\r${CURSOR}0Jinduce    shard 00001 failed: ModelThrottledError: 429 (retried or recorded)\n` +
        'induce    1/2 shards\n',
    );
  });

  it("cuts a line to the terminal's width so the cursor-up count stays right", () => {
    const stream = fakeStream(true, 20);
    const renderer = new ProgressRenderer(stream);

    renderer.update({ stage: 'induce', shards: { done: 1, total: 2 }, calls: 1000, costUsd: 1 });

    expect(stream.chunks[0]).toBe('induce    1/2 shar…\n');
  });
});
