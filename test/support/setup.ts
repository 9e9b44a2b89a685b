import '../../lib/local/polyfill.js';
import { tempDir } from './temp.js';

// Runs in tests (and the CLI processes they start, which inherit the environment) cache model calls in
// a folder of this test file's own, never in the user's cache, and never shared with another file.
process.env.SAFER_INSTRUCT_CACHE_DIR = tempDir('safer-instruct-cache-');
