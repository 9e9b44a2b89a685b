import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temporary directory for one test. */
export const tempDir = (prefix = 'safer-instruct-test-') => mkdtempSync(join(tmpdir(), prefix));

/** The JSON values of a JSON Lines file. */
export const readJsonlFile = <T>(path: string): T[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);
