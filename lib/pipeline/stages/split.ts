import { createHash } from 'node:crypto';
import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { InputError, ModelConfigError } from '../errors.js';
import { countLines, delimiterOf, formatOf, type RawRow, readCsv, readJsonl, sniffInput } from '../input.js';
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
import { parseModelSpec, resolveModelSpec } from '../models/registry.js';
import type { ParameterStore } from '../parameters.js';
import { characterCount, spreadsheetArtifact } from '../quality/checks.js';
import { normalizeText, recordIdFor, runIdFor } from '../records.js';
import {
  type InputRecord,
  Manifest,
  type Reject,
  RunMarker,
  type SplitInput,
  type SplitResult,
} from '../schemas.js';
import { jsonlChunks, toJsonl } from '../store/store.js';

/** The model id a spec's calls are priced under: what the provider's client reports as its model id. */
function pricedAs(spec: string): string {
  const parsed = parseModelSpec(spec);
  if (parsed.provider === 'bedrock' || parsed.provider === 'bedrock-custom') return parsed.modelId;
  if (parsed.provider === 'sagemaker') return `sagemaker:${parsed.endpoint}`;
  return spec;
}

/**
 * The configuration with each `ssm:` model spec replaced by the spec its parameter holds now: a run uses
 * one model from start to end, and its config, trace and report name that model, not the parameter.
 * Limits and prices written for the `ssm:` spec move to the model it names.
 */
export async function pinModels(
  config: PipelineConfig,
  parameters?: ParameterStore,
): Promise<PipelineConfig> {
  const pinned = new Map<string, string>();
  for (const [stage, spec] of Object.entries(config.models)) {
    if (!spec.startsWith('ssm:') || pinned.has(spec)) continue;
    if (!parameters)
      throw new ModelConfigError(`models.${stage} is ${spec}, but there is no parameter store here`);
    pinned.set(spec, await resolveModelSpec(spec, parameters));
  }
  if (pinned.size === 0) return config;
  const models = Object.fromEntries(
    Object.entries(config.models).map(([stage, spec]) => [stage, pinned.get(spec) ?? spec]),
  ) as PipelineConfig['models'];
  const limits = { ...config.limits };
  const prices = { ...config.prices };
  for (const [spec, resolved] of pinned) {
    const limit = limits[spec];
    if (limit) limits[resolved] = limit;
    const price = prices[spec];
    if (price) prices[pricedAs(resolved)] = price;
  }
  return { ...config, models, limits, prices };
}

/** Where the run's input is, from an S3 event or a direct start. */
function inputOf(event: SplitInput['event']): { key: string; etag: string | null; change: string } {
  if (!('detail' in event)) return { key: event.inputKey, etag: event.etag ?? null, change: '' };
  const { key, etag, sequencer, 'version-id': version } = event.detail.object;
  return { key, etag: etag ?? null, change: [version, sequencer].filter(Boolean).join('/') };
}

/** An object's key as stored: S3 event keys may arrive URL-encoded, with spaces as '+'. */
export async function resolveKey(store: StageDeps['store'], key: string) {
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

/** A field as an id or category: strings and numbers, trimmed; anything else is no value. */
const scalar = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v).trim() : '');

/** Turns one raw row into an input record, or a reject saying why not. */
function validateRow(row: RawRow, source: string, config: PipelineConfig): Validated {
  if ('error' in row)
    return { reject: { id: recordIdFor(source, row.line), ...row.error, source, line: row.line } };
  const { textField, idField, categoryField } = config.input;
  const { [textField]: rawText, [idField]: rawId, [categoryField]: rawCategory, ...rest } = row.fields;
  const givenId = scalar(rawId);
  // A field that cannot serve as id or category is kept as metadata rather than dropped.
  const meta = {
    ...rest,
    ...(rawId !== undefined && !givenId ? { [idField]: rawId } : {}),
    ...(rawCategory !== undefined && !scalar(rawCategory) ? { [categoryField]: rawCategory } : {}),
  };
  const recordId = givenId || recordIdFor(source, row.line);
  const checked = checkText(rawText, textField, config.quality.lengths.rejected);
  if (!('text' in checked)) return { reject: { id: recordId, ...checked, source, line: row.line } };
  const { text } = checked;
  const category = scalar(rawCategory) || null;
  return { record: { id: recordId, text, category, source, line: row.line, meta, trace: {} } };
}

/** The normalized text of a row, or why it has none that split can keep. */
function checkText(
  rawText: unknown,
  textField: string,
  bounds: { min: number; max: number },
): { text: string } | { reason: string; detail: string } {
  if (rawText === undefined || rawText === null)
    return { reason: 'missing-text', detail: `no "${textField}" field` };
  if (typeof rawText !== 'string')
    return { reason: 'missing-text', detail: `"${textField}" is a ${typeof rawText}, not text` };
  const text = normalizeText(rawText);
  if (text === '') return { reason: 'empty-text', detail: `"${textField}" is empty` };
  // Counted as the audit counts them: code points, so an emoji is one character.
  const length = characterCount(text);
  if (length > bounds.max)
    return { reason: 'text-too-long', detail: `${length} characters, limit ${bounds.max}` };
  if (length < bounds.min)
    return { reason: 'text-too-short', detail: `${length} characters, at least ${bounds.min}` };
  const artifact = spreadsheetArtifact(text);
  if (artifact) return { reason: 'spreadsheet-artifact', detail: artifact.detail };
  // Bytes that are not UTF-8 never get this far (the readers reject them); a NUL can, as a JSON escape.
  if (text.includes('\0')) return { reason: 'binary-content', detail: 'the text holds NUL bytes' };
  return { text };
}

/**
 * Twelve-byte (96-bit) digests, each with a small number, in one typed array: split keeps one per input
 * line, and a million of them take 32 MB and nothing for the garbage collector to trace, where a Map of
 * short strings takes several times that. At 96 bits, a billion lines collide with odds near 1e-11.
 */
class DigestTable {
  /** Four words a slot: the digest's three, then the value plus one (zero marks an empty slot). */
  #slots: Uint32Array;
  #size = 0;

  /** Room for `expected` digests before the first growth; it grows as needed past that. */
  constructor(expected: number) {
    let slots = 1024;
    while (slots * 3 < expected * 4) slots *= 2;
    this.#slots = new Uint32Array(slots * 4);
  }

  /**
   * Stores `value` (a whole number below 2^32 - 1) under the digest unless a value is there already.
   * Returns the value found, or undefined when this call stored its own.
   */
  claim(digest: Buffer, value = 0): number | undefined {
    return this.#claim(digest.readUInt32LE(0), digest.readUInt32LE(4), digest.readUInt32LE(8), value);
  }

  #claim(a: number, b: number, c: number, value: number): number | undefined {
    const slots = this.#slots;
    const mask = slots.length / 4 - 1;
    // The digest is uniformly random already, so its first word serves as the hash.
    for (let slot = a & mask; ; slot = (slot + 1) & mask) {
      const at = slot * 4;
      const stored = slots[at + 3] as number;
      if (stored === 0) {
        slots[at] = a;
        slots[at + 1] = b;
        slots[at + 2] = c;
        slots[at + 3] = value + 1;
        // Linear probing stays short while at most three slots in four are taken.
        if (++this.#size * 4 > (mask + 1) * 3) this.#grow();
        return undefined;
      }
      if (slots[at] === a && slots[at + 1] === b && slots[at + 2] === c) return stored - 1;
    }
  }

  #grow(): void {
    const old = this.#slots;
    this.#slots = new Uint32Array(old.length * 2);
    this.#size = 0;
    for (let at = 0; at < old.length; at += 4) {
      const stored = old[at + 3] as number;
      if (stored !== 0)
        this.#claim(old[at] as number, old[at + 1] as number, old[at + 2] as number, stored - 1);
    }
  }
}

const idDigest = (id: string): Buffer => createHash('sha256').update(id).digest();

/** The split of an earlier attempt of this execution, when it finished: its stats are written last. */
async function finishedSplit(store: StageDeps['store'], runId: string): Promise<SplitResult | undefined> {
  if ((await store.tryGet(splitStatsKey(runId))) === undefined) return undefined;
  const manifest = Manifest.parse(JSON.parse(await store.get(manifestKey(runId))));
  return { runId, duplicate: false, shards: manifest.shards.map((s) => s.shard), records: manifest.records };
}

/** What one pass over the rows counted. */
interface Tally {
  records: number;
  rejected: number;
  readonly shards: Manifest['shards'];
}

/**
 * Validates each row, drops duplicate ids (duplicate texts are the dedup stage's), writes full shards as it goes and yields the
 * rejects, so neither records nor rejects pile up in memory. An input without a single row is an
 * InputError.
 */
async function* sortRows(
  rows: AsyncIterable<RawRow>,
  context: {
    readonly key: string;
    readonly runId: string;
    readonly config: PipelineConfig;
    readonly shardSize: number;
    readonly lines: number;
    readonly store: StageDeps['store'];
  },
  tally: Tally,
): AsyncGenerator<Reject> {
  const { key, runId, config, shardSize, lines, store } = context;
  // Sized from the line count up front, but not so far that a file of blank lines could claim gigabytes.
  const expected = Math.min(lines, 1 << 20);
  const seenIds = new DigestTable(expected);
  let buffer: InputRecord[] = [];
  const flush = async () => {
    if (buffer.length === 0) return;
    const shard = shardId(tally.shards.length);
    await store.put(shardKey(runId, shard, 'split'), toJsonl(buffer), { intermediate: true });
    tally.shards.push({ shard, records: buffer.length });
    buffer = [];
  };

  // Every row's id is claimed, rejects' too: a later row reusing it gets an id from its own line.
  const claimId = (id: string, line: number) => {
    if (seenIds.claim(idDigest(id)) === undefined) return id;
    let own = recordIdFor(key, line);
    while (seenIds.claim(idDigest(own)) !== undefined) own = `${own}~`;
    return own;
  };
  for await (const row of rows) {
    tally.records++;
    const result = validateRow(row, key, config);
    if ('reject' in result) {
      const id = claimId(result.reject.id, row.line);
      const detail =
        id === result.reject.id
          ? result.reject.detail
          : `${result.reject.detail} (id "${result.reject.id}" was taken)`;
      tally.rejected++;
      yield { ...result.reject, id, detail, stage: 'split' };
      continue;
    }
    const { record } = result;
    const id = claimId(record.id, record.line);
    if (id !== record.id) {
      tally.rejected++;
      yield { ...splitReject(record, 'duplicate-id', `id "${record.id}" appeared earlier`), id };
      continue;
    }
    buffer.push(record);
    if (buffer.length >= shardSize) await flush();
  }
  await flush();
  if (tally.records === 0)
    throw new InputError(
      `${key}: the input holds no records; expected JSON Lines or CSV with a header and at least one row`,
    );
}

/**
 * The first stage: claims the run (once per input object version), validates and normalizes each
 * record, drops records whose id was taken, and writes shards, rejects and a manifest. Reading streams, so
 * memory stays bounded whatever the input's size; a retry of an execution whose split finished returns
 * what it wrote without reading the input again.
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
  const marker: RunMarker = { executionId: input.executionId, inputKey: key, etag };
  if (!(await store.putIfAbsent(markerKey(runId), JSON.stringify(marker)))) {
    // Absent after a lost write race means another execution is claiming it right now.
    const owner = await store.tryGet(markerKey(runId));
    const ownerId = owner === undefined ? undefined : RunMarker.parse(JSON.parse(owner)).executionId;
    if (ownerId !== input.executionId) return { runId, duplicate: true, shards: [], records: 0 };
    const finished = await finishedSplit(store, runId);
    if (finished) return finished;
  }
  // Checked only when the input is to be read: a finished split's shards stand whatever came later.
  if (given.etag && head.etag && given.etag !== head.etag)
    throw new InputError(
      `${key}: the object changed after the run started (ETag ${given.etag}, now ${head.etag}); ` +
        'its new version is a run of its own',
    );
  await store.put(configKey(runId), JSON.stringify(await pinModels(config, deps.parameters), null, 2));

  const { textField, maxLineBytes } = config.input;
  await sniffInput(await store.getStream(key), key);
  const lines = await countLines(await store.getStream(key));
  const shardSize = Math.max(config.shardSize, Math.ceil(lines / config.maxShards));
  const stream = await store.getStream(key);
  const rows =
    formatOf(key, config.input.format) === 'csv'
      ? readCsv(stream, key, textField, { delimiter: delimiterOf(key), maxLineBytes })
      : readJsonl(stream, { maxLineBytes });

  const tally: Tally = { records: 0, rejected: 0, shards: [] };
  // A store may wrap what the body threw; the stage must fail with the reader's own error.
  let failure: unknown;
  async function* rejects() {
    try {
      yield* jsonlChunks(sortRows(rows, { key, runId, config, shardSize, lines, store }, tally));
    } catch (error) {
      failure = error;
      throw error;
    }
  }
  try {
    await store.putStream(splitRejectsKey(runId), rejects());
  } catch (error) {
    throw failure ?? error;
  }

  const { records, rejected, shards } = tally;
  const manifest: Manifest = {
    runId,
    executionId: input.executionId,
    inputKey: key,
    etag,
    startedAt: (deps.now?.() ?? new Date()).toISOString(),
    shards,
    records,
    rejected,
  };
  await store.put(manifestKey(runId), JSON.stringify(manifest, null, 2));
  const stats = {
    ...emptyStats(),
    in: records,
    out: shards.reduce((n, s) => n + s.records, 0),
    rejected,
    ms: Date.now() - started,
  };
  // Written last: its presence tells a retry that this split finished.
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
