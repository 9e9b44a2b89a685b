import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temporary directory for one test. */
export const tempDir = (prefix = 'safer-instruct-test-') => mkdtempSync(join(tmpdir(), prefix));
