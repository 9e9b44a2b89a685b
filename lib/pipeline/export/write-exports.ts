import { outputKey } from '../keys.js';
import type { Pair } from '../schemas.js';
import { jsonlChunks, type Store } from '../store/store.js';
import { type DatasetCardInput, datasetCard } from './dataset-card.js';
import { EXPORT_FORMATS } from './formats.js';
import { parquetChunks } from './parquet.js';

/** The Parquet export's file name. */
export const PARQUET_FILE = 'pairs.parquet';
/** The dataset card's file name. */
export const CARD_FILE = 'README.md';

/** Every file the exports write, with its format and what it holds, for the card and the CLI. */
export const EXPORT_FILES: DatasetCardInput['files'] = [
  {
    file: 'pairs.jsonl',
    format: 'jsonl',
    description: 'Every pair with its metadata: source line, per-stage models, template hashes, scores',
  },
  ...Object.values(EXPORT_FORMATS).map(({ file, description }) => ({ file, format: 'jsonl', description })),
  {
    file: PARQUET_FILE,
    format: 'parquet',
    description: 'id, prompt, chosen, rejected, category, evaluate score and metadata (JSON) columns',
  },
];

async function* mapped<T>(rows: AsyncIterable<Pair>, row: (pair: Pair) => T): AsyncGenerator<T> {
  for await (const pair of rows) yield row(pair);
}

/**
 * Writes a run's exports next to pairs.jsonl: each JSONL format, the Parquet file and the dataset
 * card. `pairs` is called once per file, so that every export streams and none holds all pairs.
 * Returns the keys written, card last.
 */
export async function writeExports(
  store: Store,
  runId: string,
  pairs: () => AsyncIterable<Pair>,
  card: Omit<DatasetCardInput, 'files'>,
): Promise<string[]> {
  const keys: string[] = [];
  for (const format of Object.values(EXPORT_FORMATS)) {
    const key = outputKey(runId, format.file);
    await store.putStream(key, jsonlChunks(mapped(pairs(), (pair) => format.row(pair))));
    keys.push(key);
  }
  const parquet = outputKey(runId, PARQUET_FILE);
  await store.putStream(parquet, parquetChunks(pairs()));
  keys.push(parquet);
  const cardKey = outputKey(runId, CARD_FILE);
  await store.put(cardKey, datasetCard({ ...card, files: EXPORT_FILES }));
  keys.push(cardKey);
  return keys;
}
