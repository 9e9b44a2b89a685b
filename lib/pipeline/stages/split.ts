import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { InputError } from '../errors.js';
import { countLines, delimiterOf, formatOf, type RawRow, readCsv, readJsonl } from '../input.js';
import {
  configKey,
  manifestKey,
  markerKey,
  shardId,
  shardKey,
  splitRejectsKey,
  splitStatsKey,
} from '../keys.js';
import { emptyStats } from '../ledger.js';
import { dedupKey, normalizeText, recordIdFor, runIdFor } from '../records.js';
import type { InputRecord, Manifest, Reject, SplitInput, SplitResult } from '../schemas.js';
import { toJsonl } from '../store/store.js';

/** Where the run's input is, from an S3 event or a direct start. */
function inputOf(event: SplitInput['event']): { key: string; etag: string | null; change: string } {
  if (!('detail' in event)) return { key: event.inputKey, etag: event.etag ?? null, change: '' };
  const { key, etag, sequencer, 'version-id': version } = event.detail.object;
  return { key, etag: etag ?? null, change: [version, sequencer].filter(Boolean).join('/') };
}

/** The input's key as stored: S3 event keys may arrive URL-encoded, with spaces as '+'. */
async function resolveKey(store: StageDeps['store'], key: string) {
  const head = await store.head(key);
  if (head) return { key, head };
  let decoded: string;
  try {
    decoded = decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    return { key, head: undefined };
  }
  return { key: decoded, head: decoded === key ? undefined : await store.head(decoded) };
}

type Validated = { record: InputRecord } | { reject: Omit<Reject, 'stage'> };

/** Turns one raw row into an input record, or a reject saying why not. */
function validateRow(row: RawRow, source: string, config: PipelineConfig): Validated {
  const id = recordIdFor(source, row.line);
  if ('error' in row) return { reject: { id, ...row.error, source, line: row.line } };
  const { textField, idField, categoryField, maxTextChars } = config.input;
  const { [textField]: rawText, [idField]: rawId, [categoryField]: rawCategory, ...rest } = row.fields;
  const scalar = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v).trim() : '');
  const givenId = scalar(rawId);
  // A field that cannot serve as id or category is kept as metadata rather than dropped.
  const meta = {
    ...rest,
    ...(rawId !== undefined && !givenId ? { [idField]: rawId } : {}),
    ...(rawCategory !== undefined && !scalar(rawCategory) ? { [categoryField]: rawCategory } : {}),
  };
  const recordId = givenId || id;
  const reject = (reason: string, detail: string): Validated => ({
    reject: { id: recordId, reason, detail, source, line: row.line },
  });
  if (rawText === undefined || rawText === null) return reject('missing-text', `no "${textField}" field`);
  if (typeof rawText !== 'string')
    return reject('missing-text', `"${textField}" is a ${typeof rawText}, not text`);
  const text = normalizeText(rawText);
  if (text === '') return reject('empty-text', `"${textField}" is empty`);
  if (text.length > maxTextChars)
    return reject('text-too-long', `${text.length} characters, limit ${maxTextChars}`);
  if (text.includes('\uFFFD')) return reject('invalid-utf8', 'the text holds bytes that are not valid UTF-8');
  if (text.includes('\0')) return reject('binary-content', 'the text holds NUL bytes');
  const category = scalar(rawCategory) || null;
  return { record: { id: recordId, text, category, source, line: row.line, meta, trace: {} } };
}

/**
 * The first stage: claims the run (once per input object version), validates and normalizes each
 * record, drops exact duplicates, and writes shards, rejects and a manifest.
 */
export async function split(input: SplitInput, deps: StageDeps): Promise<SplitResult> {
  const started = Date.now();
  const { store } = deps;
  const config = parseConfig(input.config ?? {}, 'the state machine configuration');
  const given = inputOf(input.event);
  const { key, head } = await resolveKey(store, given.key);
  if (!head) throw new InputError(`${given.key}: no such input object`);
  const etag = given.etag ?? head.etag;
  // A re-upload, even of the same bytes, is a new change and a new run; a redelivered event is not.
  const runId = runIdFor(key, given.change ? `${etag}/${given.change}` : etag);

  // EventBridge may deliver the same event twice; only the first execution for this object version runs.
  const marker = JSON.stringify({ executionId: input.executionId, inputKey: key, etag });
  if (!(await store.putIfAbsent(markerKey(runId), marker))) {
    // Absent after a lost write race means another execution is claiming it right now.
    const owner = await store.tryGet(markerKey(runId));
    const ownerId =
      owner === undefined ? undefined : (JSON.parse(owner) as { executionId?: string }).executionId;
    if (ownerId !== input.executionId) return { runId, duplicate: true, shards: [], records: 0 };
  }
  await store.put(configKey(runId), JSON.stringify(config, null, 2));

  const lines = await countLines(await store.getStream(key));
  const shardSize = Math.max(config.shardSize, Math.ceil(lines / config.maxShards));
  const format = formatOf(key, config.input.format);
  const stream = await store.getStream(key);
  const rows =
    format === 'csv' ? readCsv(stream, key, config.input.textField, delimiterOf(key)) : readJsonl(stream);

  const seenIds = new Set<string>();
  const seenTexts = new Map<string, string>();
  const rejects: Reject[] = [];
  const shards: Manifest['shards'] = [];
  let buffer: InputRecord[] = [];
  let records = 0;
  const flush = async () => {
    if (buffer.length === 0) return;
    const shard = shardId(shards.length);
    await store.put(shardKey(runId, shard, 'split'), toJsonl(buffer), { intermediate: true });
    shards.push({ shard, records: buffer.length });
    buffer = [];
  };

  // Every row's id is claimed, rejects' too: a later row reusing it gets an id from its own line.
  const claimId = (id: string, line: number) => {
    let own = id;
    if (seenIds.has(own)) own = recordIdFor(key, line);
    while (seenIds.has(own)) own = `${own}~`;
    seenIds.add(own);
    return own;
  };
  for await (const row of rows) {
    records++;
    const result = validateRow(row, key, config);
    if ('reject' in result) {
      const id = claimId(result.reject.id, row.line);
      const detail =
        id === result.reject.id
          ? result.reject.detail
          : `${result.reject.detail} (id "${result.reject.id}" was taken)`;
      rejects.push({ ...result.reject, id, detail, stage: 'split' });
      continue;
    }
    const { record } = result;
    const id = claimId(record.id, record.line);
    if (id !== record.id) {
      rejects.push({ ...splitReject(record, 'duplicate-id', `id "${record.id}" appeared earlier`), id });
      continue;
    }
    const textKey = dedupKey(record.text);
    const first = seenTexts.get(textKey);
    if (first !== undefined) {
      rejects.push(splitReject(record, 'duplicate-text', `same text as ${first}`));
      continue;
    }
    seenTexts.set(textKey, record.id);
    buffer.push(record);
    if (buffer.length >= shardSize) await flush();
  }
  await flush();

  const kept = shards.reduce((n, s) => n + s.records, 0);
  const manifest: Manifest = {
    runId,
    executionId: input.executionId,
    inputKey: key,
    etag,
    startedAt: (deps.now?.() ?? new Date()).toISOString(),
    shards,
    records,
    rejected: rejects.length,
  };
  await store.put(splitRejectsKey(runId), toJsonl(rejects));
  await store.put(manifestKey(runId), JSON.stringify(manifest, null, 2));
  const stats = {
    ...emptyStats(),
    in: records,
    out: kept,
    rejected: rejects.length,
    ms: Date.now() - started,
  };
  await store.put(splitStatsKey(runId), JSON.stringify(stats));
  return { runId, duplicate: false, shards: shards.map((s) => s.shard), records };
}

const splitReject = (record: InputRecord, reason: string, detail: string): Reject => ({
  id: record.id,
  stage: 'split',
  reason,
  detail,
  source: record.source,
  line: record.line,
});
