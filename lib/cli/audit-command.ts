import { AUDIT_RULES, auditDataset, breaches, FailOnError, parseFailOn } from '../audit/audit.js';
import { DATASET_FORMATS, type DatasetFormat, openDataset } from '../audit/read-dataset.js';
import { renderAudit } from '../audit/render.js';
import { loadConfigFile, parseConfig } from '../pipeline/config.js';
import type { CliIo } from './main.js';

const USAGE = `Usage: safer-instruct audit <dataset.jsonl|.csv|.tsv|.parquet> [options]

Checks a preference dataset (prompt, chosen, rejected) for the defects of the released Safer-Instruct
data: malformed rows, empty sides, spreadsheet damage, stray whitespace, lengths out of bounds,
fragment instructions, equal sides, duplicates, stock refusals and near-identical chosen responses.
Reports each rule's count and rate, overall and per category, with examples.

Options:
  --json                      print the report as one JSON document
  --fail-on <rule>=<rate>     exit 2 when the rule's overall rate is above <rate>, a fraction (0.1) or
                              a percentage (10%); repeatable
  --examples <n>              examples per rule (default 3)
  --format <${DATASET_FORMATS.join('|')}>
                              the dataset's format (default: from the file extension, else jsonl)
  --prompt-field <name>       the prompt field or column (default prompt, else instruction)
  --chosen-field <name>       the chosen field or column (default chosen)
  --rejected-field <name>     the rejected field or column (default rejected)
  --category-field <name>     the category field or column (default category, else label)
  --config <file>             a JSON pipeline configuration: its quality settings give the thresholds
                              and length bounds, as in a run

Rules: ${AUDIT_RULES.join(', ')}.
Each rule counts rows, not findings: a row with two blank sides is one empty-side row. A rate is a
count over the rows of its column; duplicates are looked for across categories.
Exit status: 0 when the audit ran and no --fail-on limit was exceeded, 1 when the dataset or the
configuration cannot be read, 2 on a usage error or when a --fail-on limit was exceeded.`;

class UsageError extends Error {
  override name = 'UsageError';
}

const firstLine = (error: unknown): string =>
  ((error as { message?: string })?.message ?? String(error)).split('\n')[0] || 'unknown error';

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

/**
 * `safer-instruct audit <dataset> [options]`: audits a preference dataset and prints the report, as
 * text or with `--json` as one JSON document. Returns the exit code: 0, 1 when the input or the
 * configuration cannot be read, 2 on a usage error or an exceeded `--fail-on` limit.
 */
export async function auditCommand(args: readonly string[], io: CliIo): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  try {
    const { values, positionals } = io.parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        json: { type: 'boolean' },
        'fail-on': { type: 'string', multiple: true },
        examples: { type: 'string' },
        format: { type: 'string' },
        'prompt-field': { type: 'string' },
        'chosen-field': { type: 'string' },
        'rejected-field': { type: 'string' },
        'category-field': { type: 'string' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('audit takes one dataset file');
    const path = positionals[0] as string;
    const limits = (values['fail-on'] ?? []).map((spec) => {
      try {
        return parseFailOn(spec);
      } catch (error) {
        throw error instanceof FailOnError ? new UsageError(error.message) : error;
      }
    });
    const format = str(values.format);
    if (format !== undefined && !(DATASET_FORMATS as readonly string[]).includes(format))
      throw new UsageError(`--format takes one of ${DATASET_FORMATS.join(', ')}, not "${format}"`);
    const examplesFlag = str(values.examples);
    const examples = examplesFlag === undefined ? 3 : Number(examplesFlag);
    if (!Number.isInteger(examples) || examples < 0 || examplesFlag?.trim() === '')
      throw new UsageError(`--examples takes a whole number of at least 0, not "${examplesFlag}"`);

    const configPath = str(values.config);
    const config = parseConfig(
      configPath === undefined ? {} : await loadConfigFile(configPath),
      configPath === undefined ? 'defaults' : `config ${configPath}`,
    );
    const dataset = await openDataset(path, {
      format: format as DatasetFormat | undefined,
      maxLineBytes: config.input.maxLineBytes,
      fields: {
        prompt: str(values['prompt-field']),
        chosen: str(values['chosen-field']),
        rejected: str(values['rejected-field']),
        category: str(values['category-field']),
      },
    });
    const report = await auditDataset(dataset, { quality: config.quality, examples });
    io.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderAudit(report));
    const broken = breaches(report, limits);
    for (const { rule, rate, maxRate } of broken)
      say(
        `safer-instruct: ${rule} rate ${(rate * 100).toFixed(1)}% is above the limit of ` +
          `${(maxRate * 100).toFixed(1)}% (--fail-on ${rule}=${maxRate})`,
      );
    return broken.length > 0 ? 2 : 0;
  } catch (error) {
    const usage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    say(`safer-instruct: ${firstLine(error)}`);
    if (usage) say('try: safer-instruct audit --help');
    return usage ? 2 : 1;
  }
}
