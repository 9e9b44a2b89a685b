import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/temp.js';

const run = promisify(execFile);
const repo = new URL('../..', import.meta.url).pathname;

describe('npx cdk synth', () => {
  it('synthesizes the stack offline, with no AWS credentials or profile', async () => {
    const out = tempDir();
    const home = tempDir();
    // Only what a shell needs: no AWS_* variable, and a HOME without ~/.aws.
    const env = { PATH: process.env.PATH ?? '', HOME: home, CDK_DISABLE_VERSION_CHECK: 'true' };

    await run(
      process.execPath,
      [join(repo, 'node_modules/aws-cdk/bin/cdk'), 'synth', '--quiet', '--output', out],
      {
        cwd: repo,
        env,
      },
    );

    const template = JSON.parse(readFileSync(join(out, 'SaferInstruct.template.json'), 'utf8'));
    const types = Object.values(template.Resources as Record<string, { Type: string }>).map((r) => r.Type);
    // Seven pipeline stages and the three Lambda steps of ReverseTuning, in two workflows.
    expect(types.filter((t) => t === 'AWS::Lambda::Function')).toHaveLength(10);
    expect(types.filter((t) => t === 'AWS::StepFunctions::StateMachine')).toHaveLength(2);
    expect(existsSync(join(out, 'SaferInstruct.assets.json'))).toBe(true);
  }, 180_000);
});
