import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { z } from 'zod';
import { AccountingError, ConfigError } from '../pipeline/errors.js';
import { REVERSED_TEMPLATE } from '../pipeline/prompts/induction.js';
import { templateHash } from '../pipeline/prompts/templates.js';
import { dedupKey, normalizeText, shortHash } from '../pipeline/records.js';
import { checkRecord, formatRecord, REVERSE_FORMATS } from './formats.js';
import {
  assertInputFile,
  INSTRUCTION_SHAPES,
  type InstructionExample,
  isReadProblem,
  READ_PROBLEMS,
  readInstructions,
} from './read-instructions.js';

/** Why an input record, or one turn of it, is not in the training or held-out file. */
export const REJECT_REASONS = [
  ...READ_PROBLEMS,
  'too-short',
  'too-long',
  'duplicate',
  'duplicate-response',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** The options of {@link reverseData}; the defaults are the command's. */
export const ReverseDataOptions = z
  .strictObject({
    /** The instruction datasets, read in order. */
    inputs: z.array(z.string().min(1)).min(1, 'at least one input file'),
    /** The training file. */
    out: z.string().min(1),
    format: z.enum(REVERSE_FORMATS),
    /** The share of kept examples held out for evaluation, chosen by a hash of the pair. */
    heldout: z.number().min(0).lt(1, 'a fraction below 1').default(0.05),
    /** @default `<out stem>.heldout.jsonl` */
    heldoutOut: z.string().min(1).optional(),
    /** The fewest characters (code points) either side may have. */
    minChars: z.number().int().min(1).default(10),
    /** The most characters (code points) either side may have. */
    maxChars: z.number().int().min(1).default(8000),
    /** Read every record as this shape instead of detecting it per record. */
    shape: z.enum(INSTRUCTION_SHAPES).optional(),
    /** A longer JSON Lines line is a malformed record. */
    maxLineBytes: z
      .number()
      .int()
      .min(1024)
      .default(16 * 1024 * 1024),
  })
  .refine((o) => o.minChars <= o.maxChars, {
    message: 'the minimum characters must not be above the maximum',
    path: ['minChars'],
  });
export type ReverseDataOptions = z.infer<typeof ReverseDataOptions>;

/** One line of the rejects file. */
export const ReverseReject = z.strictObject({
  source: z.string(),
  line: z.number().int().min(1),
  turn: z.number().int().min(1).optional(),
  id: z.string().min(1).optional(),
  reason: z.enum(REJECT_REASONS),
  detail: z.string(),
});
export type ReverseReject = z.infer<typeof ReverseReject>;

/** One line of the held-out file: an example as Dolly-shaped data, so it reads back as input. */
export const HeldoutExample = z.strictObject({
  id: z.string().min(1),
  instruction: z.string().min(1),
  response: z.string().min(1),
});
export type HeldoutExample = z.infer<typeof HeldoutExample>;

/** The totals of a run. `examples + problems = train + heldout + rejected`, checked at the end. */
export const ReverseCounts = z.strictObject({
  /** Records read: JSON Lines lines that are not blank, or elements of a JSON array. */
  read: z.number().int().min(0),
  /** Examples the records gave: one per Alpaca or Dolly record, one per turn of a conversation. */
  examples: z.number().int().min(0),
  train: z.number().int().min(0),
  heldout: z.number().int().min(0),
  rejected: z.number().int().min(0),
  rejectedByReason: z.record(z.enum(REJECT_REASONS), z.number().int().min(0)),
});
export type ReverseCounts = z.infer<typeof ReverseCounts>;

/** What a run wrote and from what: the manifest next to the training file. */
export const ReverseManifest = z.strictObject({
  format: z.enum(REVERSE_FORMATS),
  template: z.strictObject({ name: z.string(), version: z.string(), hash: z.string() }),
  settings: z.strictObject({
    heldout: z.number(),
    minChars: z.number().int(),
    maxChars: z.number().int(),
    shape: z.union([z.enum(INSTRUCTION_SHAPES), z.literal('auto')]),
  }),
  inputs: z.array(
    z.strictObject({
      path: z.string(),
      read: z.number().int().min(0),
      examples: z.number().int().min(0),
    }),
  ),
  outputs: z.strictObject({ train: z.string(), heldout: z.string(), rejects: z.string() }),
  counts: ReverseCounts,
});
export type ReverseManifest = z.infer<typeof ReverseManifest>;

/** The files a run wrote. */
export interface ReversePaths {
  readonly train: string;
  readonly heldout: string;
  readonly rejects: string;
  readonly manifest: string;
}

/** The paths of a run's files: the training file, and the others next to it unless given. */
export function reversePathsOf(out: string, heldoutOut?: string): ReversePaths {
  const stem = extname(out) === '' ? out : out.slice(0, -extname(out).length);
  return {
    train: out,
    heldout: heldoutOut ?? `${stem}.heldout.jsonl`,
    rejects: `${stem}.rejects.jsonl`,
    manifest: `${stem}.manifest.json`,
  };
}

/**
 * Turns instruction datasets into training data for a reversed model, one that writes the instruction
 * a response answers (stage 0). Reads each input in order, normalizes both sides, and rejects, with a
 * reason, what a reversed model should not learn from: records it cannot read, empty or non-text sides,
 * sides shorter or longer than the bounds (in code points), a pair seen before, and a response already
 * kept with a different instruction (one response, two right answers). Each kept example goes to the
 * held-out file or the training file by a hash of its normalized pair, so the split does not depend on
 * the order of the files, and raising the fraction only moves examples into the held-out file.
 *
 * Streams: the outputs are written as records are read, to `.partial` files renamed at the end (and
 * removed on failure); only the dedup keys stay in memory. Every record, or turn of a conversation,
 * ends in exactly one file. Throws an InputError when an input cannot be read and a ConfigError on
 * invalid options.
 */
export async function reverseData(
  input: z.input<typeof ReverseDataOptions>,
): Promise<{ readonly paths: ReversePaths; readonly counts: ReverseCounts }> {
  const parsed = ReverseDataOptions.safeParse(input);
  if (!parsed.success)
    throw new ConfigError(`reverse-data options: ${z.prettifyError(parsed.error).replace(/\n/g, ' ')}`);
  const options = parsed.data;
  const paths = reversePathsOf(options.out, options.heldoutOut);
  checkDistinct(options.inputs, paths);
  for (const path of options.inputs) await assertInputFile(path);

  const sinks: StagedFile[] = [];
  try {
    for (const path of [paths.train, paths.heldout, paths.rejects]) sinks.push(await StagedFile.open(path));
    const [train, heldout, rejects] = sinks as [StagedFile, StagedFile, StagedFile];
    const { counts, inputs } = await reverseInto(options, { train, heldout, rejects });
    const manifest: ReverseManifest = {
      format: options.format,
      template: {
        name: REVERSED_TEMPLATE.name,
        version: REVERSED_TEMPLATE.version,
        hash: templateHash(REVERSED_TEMPLATE),
      },
      settings: {
        heldout: options.heldout,
        minChars: options.minChars,
        maxChars: options.maxChars,
        shape: options.shape ?? 'auto',
      },
      inputs,
      outputs: { train: paths.train, heldout: paths.heldout, rejects: paths.rejects },
      counts,
    };
    const manifestSink = await StagedFile.open(paths.manifest);
    sinks.push(manifestSink);
    await manifestSink.writeText(`${JSON.stringify(ReverseManifest.parse(manifest), null, 2)}\n`);
    for (const sink of sinks) await sink.commit();
    return { paths, counts };
  } catch (error) {
    await Promise.all(sinks.map((sink) => sink.discard()));
    throw error;
  }
}

/** Throws a ConfigError when two outputs are one file, or an output would overwrite an input. */
function checkDistinct(inputs: readonly string[], paths: ReversePaths): void {
  const outputs = Object.entries(paths).map(([name, path]) => [name, resolve(path)] as const);
  const seen = new Map<string, string>();
  for (const [name, path] of outputs) {
    const other = seen.get(path);
    if (other) throw new ConfigError(`the ${name} file and the ${other} file are both ${path}`);
    seen.set(path, name);
  }
  for (const input of inputs) {
    const name = seen.get(resolve(input));
    if (name) throw new ConfigError(`the ${name} file ${input} would overwrite an input`);
  }
}

/** The share of the hash space below which a pair is held out. */
const heldoutPoint = (pairKey: string): number =>
  Number.parseInt(shortHash(`heldout\n${pairKey}`, 8), 16) / 2 ** 32;

/** Code points, as people count characters; an emoji is one, not two UTF-16 units. */
function codePoints(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/** An example that passes the checks, normalized, or why it does not. */
type Verdict =
  | { readonly instruction: string; readonly response: string }
  | { readonly reason: RejectReason; readonly detail: string };

/** Normalizes both sides and checks that each is text of a length in bounds. */
function judge(example: InstructionExample, options: ReverseDataOptions): Verdict {
  const sides = {
    instruction: normalizeText(example.instruction),
    response: normalizeText(example.response),
  };
  const named = Object.entries(sides) as [keyof typeof sides, string][];
  const empty = named.filter(([, text]) => text === '').map(([side]) => side);
  if (empty.length > 0) return { reason: 'empty', detail: `empty ${empty.join(' and ')}` };
  const withNul = named.filter(([, text]) => text.includes('\u0000')).map(([side]) => side);
  if (withNul.length > 0)
    return { reason: 'non-text', detail: `a NUL character in the ${withNul.join(' and ')}` };
  const lengths = named.map(([side, text]) => [side, codePoints(text)] as const);
  const short = lengths.filter(([, n]) => n < options.minChars);
  if (short.length > 0)
    return {
      reason: 'too-short',
      detail: `${short.map(([side, n]) => `${side} ${n}`).join(', ')} characters; at least ${options.minChars}`,
    };
  const long = lengths.filter(([, n]) => n > options.maxChars);
  if (long.length > 0)
    return {
      reason: 'too-long',
      detail: `${long.map(([side, n]) => `${side} ${n}`).join(', ')} characters; at most ${options.maxChars}`,
    };
  return sides;
}

/** Reads every input and writes each item to one of the three files; returns the totals. */
async function reverseInto(
  options: ReverseDataOptions,
  out: { readonly train: StagedFile; readonly heldout: StagedFile; readonly rejects: StagedFile },
): Promise<{ counts: ReverseCounts; inputs: ReverseManifest['inputs'] }> {
  const byReason = Object.fromEntries(REJECT_REASONS.map((reason) => [reason, 0])) as Record<
    RejectReason,
    number
  >;
  const counts = { read: 0, examples: 0, train: 0, heldout: 0, rejected: 0 };
  let problems = 0;
  const inputs: ReverseManifest['inputs'] = [];
  // The first id of each pair and of each kept response: enough to say what a duplicate repeats.
  const pairs = new Map<string, string>();
  const responses = new Map<string, string>();

  const reject = async (entry: ReverseReject) => {
    await out.rejects.write(ReverseReject.parse(entry));
    byReason[entry.reason]++;
    counts.rejected++;
  };

  for (const path of options.inputs) {
    const tally = { path, read: 0, examples: 0 };
    let lastLine = 0;
    for await (const item of readInstructions(path, {
      shape: options.shape,
      maxLineBytes: options.maxLineBytes,
    })) {
      // A record's items come together, so a new line is a new record.
      if (item.line !== lastLine) tally.read++;
      lastLine = item.line;
      if (isReadProblem(item)) {
        problems++;
        await reject(item);
        continue;
      }
      tally.examples++;
      const where = {
        source: item.source,
        line: item.line,
        ...(item.turn === undefined ? {} : { turn: item.turn }),
        id: item.id,
      };
      const verdict = judge(item, options);
      if ('reason' in verdict) {
        await reject({ ...where, ...verdict });
        continue;
      }
      const responseKey = dedupKey(verdict.response);
      const pairKey = `${dedupKey(verdict.instruction)}:${responseKey}`;
      const samePair = pairs.get(pairKey);
      if (samePair !== undefined) {
        await reject({
          ...where,
          reason: 'duplicate',
          detail: `the same instruction and response as ${samePair}`,
        });
        continue;
      }
      pairs.set(pairKey, item.id);
      const sameResponse = responses.get(responseKey);
      if (sameResponse !== undefined) {
        await reject({
          ...where,
          reason: 'duplicate-response',
          detail: `the same response as ${sameResponse}, with a different instruction`,
        });
        continue;
      }
      responses.set(responseKey, item.id);
      if (options.heldout > 0 && heldoutPoint(pairKey) < options.heldout) {
        await out.heldout.write(HeldoutExample.parse({ id: item.id, ...verdict }));
        counts.heldout++;
      } else {
        const record = formatRecord(options.format, verdict);
        checkRecord(options.format, record, item.id);
        await out.train.write(record);
        counts.train++;
      }
    }
    counts.read += tally.read;
    counts.examples += tally.examples;
    inputs.push(tally);
  }
  if (counts.examples + problems !== counts.train + counts.heldout + counts.rejected)
    throw new AccountingError(
      `${counts.examples} examples and ${problems} unreadable records or turns in, but ` +
        `${counts.train} trained, ${counts.heldout} held out and ${counts.rejected} rejected out`,
    );
  return { counts: { ...counts, rejectedByReason: byReason }, inputs };
}

/** How much text a sink gathers before it writes. */
const FLUSH_CHARS = 64 * 1024;

/**
 * An output file written in chunks to `<path>.partial`, renamed to its path on commit, so a failed run
 * leaves no half-written file under the final name.
 */
class StagedFile {
  private buffer = '';

  private constructor(
    readonly path: string,
    private readonly partial: string,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<StagedFile> {
    await mkdir(dirname(path), { recursive: true });
    const partial = `${path}.partial`;
    return new StagedFile(path, partial, await open(partial, 'w'));
  }

  async write(value: unknown): Promise<void> {
    await this.writeText(`${JSON.stringify(value)}\n`);
  }

  async writeText(text: string): Promise<void> {
    this.buffer += text;
    if (this.buffer.length >= FLUSH_CHARS) await this.flush();
  }

  private async flush(): Promise<void> {
    const text = this.buffer;
    this.buffer = '';
    // On a file handle, writeFile writes all of it from the current position on.
    if (text) await this.handle.writeFile(text, 'utf8');
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.handle.close();
    await rename(this.partial, this.path);
  }

  async discard(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    await rm(this.partial, { force: true });
  }
}
