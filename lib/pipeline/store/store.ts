import type { Readable } from 'node:stream';

/** Options for a write. */
export interface PutOptions {
  /** Intermediate objects (shards, per-stage stats) expire under the bucket's lifecycle rule. */
  readonly intermediate?: boolean;
}

/**
 * The pipeline's object store: S3 in AWS, a folder locally, with the same keys.
 * Every write is atomic: a reader sees the whole object or none of it.
 */
export interface Store {
  /** Reads an object as UTF-8 text; throws StoreKeyMissingError when absent. */
  get(key: string): Promise<string>;
  /** Reads an object as UTF-8 text, or undefined when absent. */
  tryGet(key: string): Promise<string | undefined>;
  /** Streams an object's bytes; throws StoreKeyMissingError when absent. */
  getStream(key: string): Promise<Readable>;
  /** Writes an object whole, replacing any previous version. */
  put(key: string, body: string | Uint8Array, options?: PutOptions): Promise<void>;
  /** Writes an object from a stream of chunks, whole or not at all; for outputs too large to hold. */
  putStream(key: string, body: AsyncIterable<string | Uint8Array>, options?: PutOptions): Promise<void>;
  /** Writes an object only if none exists under the key; true when this call wrote it. */
  putIfAbsent(key: string, body: string): Promise<boolean>;
  /** The object's size and entity tag, or undefined when absent. */
  head(key: string): Promise<{ size: number; etag: string } | undefined>;
}

/** JSON Lines of a list of values, newline-terminated. */
export const toJsonl = (rows: readonly unknown[]): string =>
  rows.length === 0 ? '' : `${rows.map((row) => JSON.stringify(row)).join('\n')}\n`;

/** JSON Lines of a stream of values, in strings of about 64 KB: few writes, never all rows at once. */
export async function* jsonlChunks(rows: AsyncIterable<unknown>, size = 64 * 1024): AsyncGenerator<string> {
  let chunk = '';
  for await (const row of rows) {
    chunk += `${JSON.stringify(row)}\n`;
    if (chunk.length >= size) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk) yield chunk;
}
