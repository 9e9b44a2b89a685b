import { z } from 'zod';

/** The environment a stage function reads once per process. CDK sets the same keys. */
export const Env = z.object({
  /** The run bucket in AWS; absent locally. */
  BUCKET_NAME: z.string().min(1).optional(),
  /** The filesystem store root for local runs. */
  STORE_DIR: z.string().min(1).optional(),
  /** Which stage this function runs. */
  STAGE: z.string().optional(),
});
export type Env = z.infer<typeof Env>;

/** Reads and validates the environment, once per process. */
export const loadEnv = (src: Record<string, string | undefined> = process.env): Env => Env.parse(src);

/** The environment variable names CDK sets on every stage function. */
export const ENV_KEYS = { bucket: 'BUCKET_NAME', stage: 'STAGE' } as const;
