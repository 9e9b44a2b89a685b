/** One measured case of a bench: its figures and whether they met the bench's target. */
export interface BenchRow {
  readonly bench: string;
  readonly case: string;
  /** Figures to print, in column order. */
  readonly figures: Readonly<Record<string, string | number>>;
  /** The target, in words, as printed. */
  readonly target: string;
  readonly met: boolean;
}

/** A bench: `npm run bench` runs each in turn and fails when any row misses its target. */
export interface Bench {
  readonly name: string;
  run(): Promise<BenchRow[]>;
}
