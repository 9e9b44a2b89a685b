import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The user's cache folder for safer-instruct: `$SAFER_INSTRUCT_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/safer-instruct`, else `~/.cache/safer-instruct`. Downloaded models and answered
 * model calls live under it, shared by every run on the machine.
 */
export function cacheRoot(env: Record<string, string | undefined> = process.env): string {
  return (
    env.SAFER_INSTRUCT_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'safer-instruct')
  );
}
