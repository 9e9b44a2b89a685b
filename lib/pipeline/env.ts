import { z } from 'zod';
import { ConfigError } from './errors.js';

/** The environment a stage function reads once per process. CDK sets the same keys. */
export const Env = z.object({
  /** The run bucket. */
  BUCKET_NAME: z.string().min(1),
  /** Which stage this function runs; the local engine maps functions to handler modules by it. */
  STAGE: z.string().optional(),
  /** The role Bedrock runs batch inference jobs as; set on the `batch` function only. */
  BATCH_ROLE_ARN: z.string().min(1).optional(),
});
export type Env = z.infer<typeof Env>;

/** Reads and validates the environment, once per process; a missing key is a ConfigError naming it. */
export function loadEnv(src: Record<string, string | undefined> = process.env): Env {
  const parsed = Env.safeParse(src);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    `stage function environment: ${parsed.error.issues.map((i) => i.path.join('.')).join(', ')} not set`,
  );
}

/** The environment variable names CDK sets: bucket and stage on every stage function, batchRole on `batch`. */
export const ENV_KEYS = { bucket: 'BUCKET_NAME', stage: 'STAGE', batchRole: 'BATCH_ROLE_ARN' } as const;
