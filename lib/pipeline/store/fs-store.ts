import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StoreKeyInvalidError, StoreKeyMissingError } from '../errors.js';
import type { Store } from './store.js';

/** A Store on the local filesystem: key `a/b.jsonl` is the file `<root>/a/b.jsonl`. */
export class FsStore implements Store {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  /** The file path of a key; refuses keys that would escape the root. */
  pathOf(key: string): string {
    const path = resolve(join(this.root, key));
    if (!path.startsWith(this.root + sep))
      throw new StoreKeyInvalidError(`store key escapes the store: ${key}`);
    return path;
  }

  async get(key: string): Promise<string> {
    const text = await this.tryGet(key);
    if (text === undefined) throw new StoreKeyMissingError(`no object at ${key}`);
    return text;
  }

  async tryGet(key: string): Promise<string | undefined> {
    try {
      return await readFile(this.pathOf(key), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async getStream(key: string): Promise<Readable> {
    const path = this.pathOf(key);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) throw new StoreKeyMissingError(`no object at ${key}`);
    return createReadStream(path);
  }

  async put(key: string, body: string | Uint8Array): Promise<void> {
    const path = this.pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    // Write beside, then rename: a crash never leaves a half-written object under the key.
    const temp = `${path}.${randomUUID()}.tmp`;
    await writeAside(temp, () => writeFile(temp, body));
    await rename(temp, path);
  }

  async putStream(key: string, body: AsyncIterable<string | Uint8Array>): Promise<void> {
    const path = this.pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${randomUUID()}.tmp`;
    await writeAside(temp, () => pipeline(Readable.from(body), createWriteStream(temp)));
    await rename(temp, path);
  }

  async putIfAbsent(key: string, body: string): Promise<boolean> {
    const path = this.pathOf(key);
    await mkdir(dirname(path), { recursive: true });
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(body);
      await handle.close();
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    }
  }

  async head(key: string): Promise<{ size: number; etag: string } | undefined> {
    try {
      const path = this.pathOf(key);
      const info = await stat(path);
      if (!info.isFile()) return undefined;
      // Like S3's ETag of a single-part upload: the MD5 of the content, so equal bytes give equal tags.
      const md5 = createHash('md5');
      await pipeline(createReadStream(path), md5);
      return { size: info.size, etag: md5.digest('hex') };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }
}

/** Writes a temporary file; a write that fails (a full disk, a body that throws) leaves nothing behind. */
async function writeAside(temp: string, write: () => Promise<void>): Promise<void> {
  try {
    await write();
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
