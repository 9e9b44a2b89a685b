import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { App } from 'aws-cdk-lib';
import { VALIDATION_REPORT_FILE } from 'aws-cdk-lib/cx-api';

/** AwsSolutions findings of a synthesized app, as `severity rule at paths`, read from the validation report. */
export function nagFindings(app: App): string[] {
  const assembly = app.synth();
  const reportFile = join(assembly.directory, VALIDATION_REPORT_FILE);
  if (!existsSync(reportFile)) throw new Error('the validation plugins did not run');
  const report = JSON.parse(readFileSync(reportFile, 'utf8')) as {
    pluginReports: {
      pluginName: string;
      violations: { ruleName: string; severity: string; violatingConstructs: { constructPath: string }[] }[];
    }[];
  };
  return report.pluginReports
    .filter((r) => r.pluginName === 'AwsSolutions')
    .flatMap((r) => r.violations)
    .map(
      (v) => `${v.severity} ${v.ruleName} at ${v.violatingConstructs.map((c) => c.constructPath).join(', ')}`,
    );
}
