import { rmSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { tempDir } from './temp.js';

/** How a test app synthesizes: with asset bundling (slow), and with extra context. */
export interface TestAppOptions {
  readonly bundle?: boolean;
  readonly context?: Record<string, unknown>;
}

/**
 * CDK apps for one test file, each in its own output folder: `newApp` makes one, `cleanup` (for
 * afterAll) removes every folder made.
 */
export function testApps() {
  const outdirs: string[] = [];
  return {
    newApp(options: TestAppOptions = {}): App {
      const outdir = tempDir('safer-instruct-cdk-');
      outdirs.push(outdir);
      return new App({
        outdir,
        // The built-in CloudFormation validation costs ~8 s a synth; cdk-nag is the check that matters here.
        builtinCloudFormationValidation: false,
        context: { ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }), ...options.context },
      });
    },
    cleanup(): void {
      for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}
