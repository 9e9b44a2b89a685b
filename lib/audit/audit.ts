import { z } from 'zod';
import { QualityConfig } from '../pipeline/config.js';
import {
  chosenLikeRejected,
  type Finding,
  fragmentInstruction,
  isBlank,
  lengthIssue,
  spreadsheetArtifact,
  stockRefusal,
  whitespaceIssue,
} from '../pipeline/quality/checks.js';
import { DiversityTally } from '../pipeline/quality/diversity.js';
import { NearDuplicateIndex } from '../pipeline/quality/near-duplicates.js';
import { dedupKey, normalizeText } from '../pipeline/records.js';
import { DATASET_FORMATS, type Dataset, type DatasetEntry, type DatasetPair } from './read-dataset.js';

/**
 * The audit's rules, in report order. Each counts rows, not findings: a row with two fields of
 * leading whitespace counts once under `whitespace`, and its first such field is the example.
 */
export const AUDIT_RULES = [
  /** The row is not a pair: bad JSON or CSV, a missing field, a field that is not a string. */
  'malformed-row',
  /** The prompt, chosen or rejected text is blank (empty, whitespace, or punctuation only). */
  'empty-side',
  /** A spreadsheet error value such as `#NAME?` in the prompt, chosen or rejected text. */
  'spreadsheet-artifact',
  /** Whitespace the pipeline would normalize, in the prompt, chosen or rejected text. */
  'whitespace',
  /** A non-blank side shorter than its bound (the prompt's is `lengths.instruction`). */
  'too-short',
  /** A side longer than its bound. */
  'too-long',
  /** A non-blank prompt that cannot stand alone. */
  'fragment-instruction',
  /** Chosen and rejected, both non-blank, are the same text once case and spacing are ignored. */
  'chosen-equals-rejected',
  /** Chosen and rejected, both non-blank, reach the near-duplicate threshold but are not the same. */
  'chosen-near-rejected',
  /** The prompt equals (after normalization) that of an earlier row; the first is not counted. */
  'duplicate-prompt',
  /** The prompt is a near-duplicate (MinHash) of an earlier row's, and equals none. */
  'near-duplicate-prompt',
  /** Prompt, chosen and rejected all equal those of an earlier row (the prompt non-blank). */
  'duplicate-pair',
  /** The non-blank rejected text equals that of an earlier row. */
  'duplicate-rejected',
  /** The chosen response is a short canned refusal that offers nothing. */
  'stock-refusal',
  /** The row is past the first `maxNearIdenticalChosen` in its group of near-identical chosen responses. */
  'near-identical-chosen-excess',
] as const;
export const AuditRule = z.enum(AUDIT_RULES);
export type AuditRule = z.infer<typeof AuditRule>;

/** Where a rule fired: the row's line, the field, its text cut to 160 characters, and why. */
export const AuditExample = z.object({
  line: z.number().int().positive(),
  field: z.enum(['prompt', 'chosen', 'rejected', 'row']),
  text: z.string(),
  detail: z.string(),
});
export type AuditExample = z.infer<typeof AuditExample>;

/** One rule's tally: rows that break it, their share of the rows, and the first few. */
export const RuleTally = z.object({
  count: z.number().int().nonnegative(),
  rate: z.number().min(0).max(1),
  examples: z.array(AuditExample),
});
export type RuleTally = z.infer<typeof RuleTally>;

/** The tallies of the whole dataset or of one category. */
export const AuditSection = z.object({
  /** Rows read; for a category, its well-formed rows. Rates are counts over this. */
  rows: z.number().int().nonnegative(),
  /** Rows that are pairs: `rows` less the malformed ones. */
  pairs: z.number().int().nonnegative(),
  rules: z.record(AuditRule, RuleTally),
  /** Stock refusals over pairs. */
  stockRefusalShare: z.number().min(0).max(1),
  /** Distinct-1 and distinct-2 of the chosen responses. */
  distinct1: z.number().min(0).max(1),
  distinct2: z.number().min(0).max(1),
});
export type AuditSection = z.infer<typeof AuditSection>;

/** The audit of one preference dataset, as `safer-instruct audit --json` prints it. */
export const AuditReport = z.object({
  source: z.string(),
  format: z.enum(DATASET_FORMATS),
  fields: z.object({
    prompt: z.string(),
    chosen: z.string(),
    rejected: z.string(),
    category: z.string().nullable(),
  }),
  /** The rules' settings: thresholds and bounds. */
  quality: QualityConfig,
  overall: AuditSection,
  /** One section per category, by name; empty when the dataset has no category field. */
  categories: z.array(AuditSection.extend({ name: z.string() })),
  /** The most frequent chosen responses (case and spacing ignored), first spelling shown. */
  topChosen: z.array(z.object({ text: z.string(), count: z.number().int().positive() })),
  elapsedMs: z.number().nonnegative(),
});
export type AuditReport = z.infer<typeof AuditReport>;

/** Options of {@link auditDataset}. */
export interface AuditOptions {
  readonly quality: QualityConfig;
  /** Examples kept per rule, overall and per category. @default 3 */
  readonly examples?: number;
}

/** The name a row without a category gets when the dataset has a category field. */
export const NO_CATEGORY = '(none)';

/** How long an example's text may be, in characters. */
export const EXAMPLE_CHARS = 160;

/** Cuts a text to `max` characters (code points), the last one an ellipsis when it was longer. */
export function truncate(text: string, max = EXAMPLE_CHARS): string {
  const points = Array.from(text.slice(0, max * 2 + 2));
  return points.length > max ? `${points.slice(0, max - 1).join('')}…` : text;
}

type Field = AuditExample['field'];
type Hit = { readonly field: Field; readonly text: string; readonly detail: string };

/** Running tallies of one section. */
class SectionTally {
  rows = 0;
  pairs = 0;
  stockRefusals = 0;
  readonly counts = new Map<AuditRule, number>(AUDIT_RULES.map((rule) => [rule, 0]));
  readonly examples = new Map<AuditRule, AuditExample[]>(AUDIT_RULES.map((rule) => [rule, []]));
  readonly chosen = new DiversityTally();

  constructor(private readonly maxExamples: number) {}

  record(line: number, hits: ReadonlyMap<AuditRule, Hit>): void {
    for (const [rule, hit] of hits) {
      this.counts.set(rule, (this.counts.get(rule) ?? 0) + 1);
      const examples = this.examples.get(rule) as AuditExample[];
      if (examples.length < this.maxExamples)
        examples.push({ line, field: hit.field, text: truncate(hit.text), detail: hit.detail });
    }
  }

  section(): AuditSection {
    const diversity = this.chosen.summary();
    const rules = Object.fromEntries(
      AUDIT_RULES.map((rule) => {
        const count = this.counts.get(rule) ?? 0;
        return [
          rule,
          { count, rate: this.rows === 0 ? 0 : count / this.rows, examples: this.examples.get(rule) ?? [] },
        ];
      }),
    ) as Record<AuditRule, RuleTally>;
    return {
      rows: this.rows,
      pairs: this.pairs,
      rules,
      stockRefusalShare: this.pairs === 0 ? 0 : this.stockRefusals / this.pairs,
      distinct1: diversity.distinct1,
      distinct2: diversity.distinct2,
    };
  }
}

const SIDES = ['prompt', 'chosen', 'rejected'] as const;

/**
 * Applies every rule to each row in one pass. Exact duplicates are found by the pipeline's dedup key
 * (case and runs of whitespace ignored, after normalization), near ones by MinHash at the configured
 * threshold; a row is compared with the rows before it, so the first of a group is never counted.
 * Duplicate rules look across categories, and a row counts in its own category.
 */
export class PairAuditor {
  readonly #quality: QualityConfig;
  readonly #overall: SectionTally;
  readonly #categories = new Map<string, SectionTally>();
  readonly #maxExamples: number;
  readonly #prompts = new Map<string, number>();
  readonly #pairs = new Map<string, number>();
  readonly #rejected = new Map<string, number>();
  readonly #nearPrompts: NearDuplicateIndex<number>;
  /** Chosen responses by dedup key, to their group; groups by index, to their first line and size. */
  readonly #chosenGroups = new Map<string, number>();
  readonly #nearChosen: NearDuplicateIndex<number>;
  readonly #groups: { line: number; size: number }[] = [];
  readonly #byCategory: boolean;

  /** `byCategory` is false when the dataset has no category field: then there are no category sections. */
  constructor(options: AuditOptions, byCategory: boolean) {
    this.#byCategory = byCategory;
    this.#quality = options.quality;
    this.#maxExamples = options.examples ?? 3;
    this.#overall = new SectionTally(this.#maxExamples);
    const near = {
      threshold: this.#quality.nearDuplicateThreshold,
      permutations: this.#quality.minhashPermutations,
      shingleSize: this.#quality.shingleSize,
    };
    this.#nearPrompts = new NearDuplicateIndex<number>(near);
    this.#nearChosen = new NearDuplicateIndex<number>(near);
  }

  /** Audits one row. */
  add(entry: DatasetEntry): void {
    this.#overall.rows++;
    if ('error' in entry) {
      const hit: Hit = { field: 'row', text: '', detail: `${entry.error.reason}: ${entry.error.detail}` };
      this.#overall.record(entry.line, new Map([['malformed-row', hit]]));
      return;
    }
    const { pair, line } = entry;
    const chosenKey = dedupKey(normalizeText(pair.chosen));
    const hits = this.#check(pair, line, chosenKey);
    const refusal = hits.has('stock-refusal');
    for (const tally of [this.#overall, this.#categoryTally(pair)]) {
      if (tally === undefined) continue;
      if (tally !== this.#overall) tally.rows++;
      tally.pairs++;
      if (refusal) tally.stockRefusals++;
      tally.chosen.add(pair.chosen, chosenKey);
      tally.record(line, hits);
    }
  }

  /** The report so far. */
  report(dataset: Pick<Dataset, 'path' | 'format' | 'fields'>, elapsedMs: number): AuditReport {
    const categories = [...this.#categories.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, tally]) => ({ name, ...tally.section() }));
    return {
      source: dataset.path,
      format: dataset.format,
      fields: { ...dataset.fields, category: dataset.fields.category ?? null },
      quality: this.#quality,
      overall: this.#overall.section(),
      categories,
      topChosen: this.#overall.chosen
        .summary()
        .top.map(({ text, count }) => ({ text: truncate(text), count })),
      elapsedMs,
    };
  }

  #categoryTally(pair: DatasetPair): SectionTally | undefined {
    if (!this.#byCategory) return undefined;
    const name = pair.category ?? NO_CATEGORY;
    let tally = this.#categories.get(name);
    if (tally === undefined) {
      tally = new SectionTally(this.#maxExamples);
      this.#categories.set(name, tally);
    }
    return tally;
  }

  #check(pair: DatasetPair, line: number, chosenKey: string): Map<AuditRule, Hit> {
    const hits = new Map<AuditRule, Hit>();
    const hit = (rule: AuditRule, field: Field, text: string, detail: string) => {
      if (!hits.has(rule)) hits.set(rule, { field, text, detail });
    };
    const found = (field: Field, text: string, finding: Finding | undefined) => {
      if (finding) hit(finding.rule, field, text, finding.detail);
    };
    const { lengths } = this.#quality;
    const bounds = { prompt: lengths.instruction, chosen: lengths.chosen, rejected: lengths.rejected };
    const blank = SIDES.filter((side) => isBlank(pair[side]));
    if (blank.length > 0) {
      const first = blank[0] as (typeof SIDES)[number];
      hit(
        'empty-side',
        first,
        pair[first],
        `${blank.join(' and ')} ${blank.length > 1 ? 'are' : 'is'} blank`,
      );
    }
    // A blank side is reported as such and nothing else, so one defect is not counted under three rules.
    for (const side of SIDES) {
      if (blank.includes(side)) continue;
      const text = pair[side];
      found(side, text, spreadsheetArtifact(text));
      found(side, text, whitespaceIssue(text));
      found(side, text, lengthIssue(text, bounds[side]));
    }
    const prompt = normalizeText(pair.prompt);
    const chosen = normalizeText(pair.chosen);
    const rejected = normalizeText(pair.rejected);
    const promptBlank = blank.includes('prompt');
    const chosenBlank = blank.includes('chosen');
    const rejectedBlank = blank.includes('rejected');
    const rejectedKey = dedupKey(rejected);
    if (!promptBlank) found('prompt', pair.prompt, fragmentInstruction(pair.prompt));
    if (!chosenBlank && !rejectedBlank)
      found(
        'chosen',
        pair.chosen,
        chosenLikeRejected(chosen, rejected, this.#quality.nearDuplicateThreshold, this.#quality.shingleSize),
      );
    if (!promptBlank) {
      const key = dedupKey(prompt);
      const earlier = this.#prompts.get(key);
      if (earlier !== undefined) hit('duplicate-prompt', 'prompt', pair.prompt, `same as line ${earlier}`);
      else {
        this.#prompts.set(key, line);
        const near = this.#nearPrompts.claim(prompt, line);
        if (near)
          hit(
            'near-duplicate-prompt',
            'prompt',
            pair.prompt,
            `like line ${near.value}, similarity ${near.similarity.toFixed(2)}`,
          );
      }
      const pairKey = `${key}/${chosenKey}/${rejectedKey}`;
      const first = this.#pairs.get(pairKey);
      if (first !== undefined) hit('duplicate-pair', 'prompt', pair.prompt, `same pair as line ${first}`);
      else this.#pairs.set(pairKey, line);
    }
    if (!rejectedBlank) {
      const earlier = this.#rejected.get(rejectedKey);
      if (earlier !== undefined)
        hit('duplicate-rejected', 'rejected', pair.rejected, `same as line ${earlier}`);
      else this.#rejected.set(rejectedKey, line);
    }
    if (!chosenBlank) {
      found('chosen', pair.chosen, stockRefusal(pair.chosen));
      const group = this.#chosenGroup(chosen, chosenKey, line);
      const max = this.#quality.maxNearIdenticalChosen;
      if (group.size > max)
        hit(
          'near-identical-chosen-excess',
          'chosen',
          pair.chosen,
          `response ${group.size} of a group near-identical to line ${group.line}; at most ${max} are kept`,
        );
    }
    return hits;
  }

  /** The group of near-identical chosen responses this one joins, with the row counted in its size. */
  #chosenGroup(chosen: string, key: string, line: number): { line: number; size: number } {
    let index = this.#chosenGroups.get(key);
    if (index === undefined) {
      index = this.#nearChosen.claim(chosen, this.#groups.length)?.value ?? this.#groups.length;
      if (index === this.#groups.length) this.#groups.push({ line, size: 0 });
      this.#chosenGroups.set(key, index);
    }
    const group = this.#groups[index] as { line: number; size: number };
    group.size++;
    return group;
  }
}

/** Audits every row of a dataset; reading it may throw an InputError (no rows, unreadable). */
export async function auditDataset(dataset: Dataset, options: AuditOptions): Promise<AuditReport> {
  const started = performance.now();
  const auditor = new PairAuditor(options, dataset.fields.category !== undefined);
  for await (const entry of dataset.entries) auditor.add(entry);
  return auditor.report(dataset, Math.round(performance.now() - started));
}

/** A `--fail-on` limit: the most a rule's overall rate may be. */
export interface FailOn {
  readonly rule: AuditRule;
  readonly maxRate: number;
}

/** A `--fail-on` value that is not `<rule>=<max-rate>` with a known rule and a rate in [0, 1]. */
export class FailOnError extends Error {
  override name = 'FailOnError';
}

/**
 * Parses `<rule>=<max-rate>`: the rate a fraction (`0.1`) or a percentage (`10%`), from 0 to 1.
 * Throws a FailOnError that names the valid rules.
 */
export function parseFailOn(spec: string): FailOn {
  const at = spec.indexOf('=');
  const rule = at < 0 ? spec : spec.slice(0, at);
  const value = at < 0 ? '' : spec.slice(at + 1).trim();
  if (!AuditRule.safeParse(rule).success)
    throw new FailOnError(
      `--fail-on ${spec}: unknown rule "${rule}"; the rules are ${AUDIT_RULES.join(', ')}`,
    );
  const percent = value.endsWith('%');
  const number = percent ? Number(value.slice(0, -1)) / 100 : Number(value);
  if (value === '' || value === '%' || !Number.isFinite(number) || number < 0 || number > 1)
    throw new FailOnError(
      `--fail-on ${spec}: the max rate must be a fraction from 0 to 1 (0.1) or a percentage (10%), ` +
        `as in ${rule}=0.1; the rules are ${AUDIT_RULES.join(', ')}`,
    );
  return { rule: rule as AuditRule, maxRate: number };
}

/** The limits a report breaks: each rule whose overall rate is above its max. */
export function breaches(
  report: AuditReport,
  limits: readonly FailOn[],
): { rule: AuditRule; rate: number; maxRate: number }[] {
  return limits
    .filter(({ rule, maxRate }) => report.overall.rules[rule].rate > maxRate)
    .map(({ rule, maxRate }) => ({ rule, rate: report.overall.rules[rule].rate, maxRate }));
}
