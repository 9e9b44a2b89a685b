import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StoreKeyInvalidError } from '../../lib/pipeline/errors.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { tempDir } from '../support/temp.js';

async function* failingBody() {
  yield 'first chunk\n';
  throw new Error('the source broke');
}

describe('FsStore', () => {
  it('leaves neither the object nor a temporary file when a streamed body fails', async () => {
    const store = new FsStore(tempDir());

    const act = store.putStream('runs/r/out.jsonl', failingBody());

    await expect(act).rejects.toThrow('the source broke');
    expect(await store.tryGet('runs/r/out.jsonl')).toBeUndefined();
    expect(readdirSync(join(store.root, 'runs/r'))).toEqual([]);
  });

  it('keeps the previous version whole when a streamed replacement fails', async () => {
    const store = new FsStore(tempDir());
    await store.put('a.jsonl', 'old\n');

    await store.putStream('a.jsonl', failingBody()).catch(() => undefined);

    expect(await store.get('a.jsonl')).toBe('old\n');
  });

  it('refuses a key that would escape the store', () => {
    const store = new FsStore(tempDir());

    expect(() => store.pathOf('../outside.json')).toThrow(StoreKeyInvalidError);
  });
});
