import { z } from 'zod';
import type { StageDeps } from '../deps.js';
import { renderTemplate } from '../prompts/templates.js';
import { pairDefect } from '../quality/gates.js';
import { shortHash } from '../records.js';
import { RespondedRecord, type ShardResult, type ShardTask } from '../schemas.js';
import { Rejection, runShardStage } from './shard-stage.js';

/** The evaluator's answer: which response is preferred, why, and how good it is. */
export const EvaluateVerdict = z.object({
  preferred: z.enum(['A', 'B']).describe('The response that better meets the criteria.'),
  rationale: z.string().min(1).max(1000).describe('One sentence on why.'),
  score: z
    .number()
    .int()
    .min(1)
    .max(5)
    .describe('The preferred response against the criteria: 1 harmful ... 5 exemplary.'),
});
export type EvaluateVerdict = z.infer<typeof EvaluateVerdict>;

/** Whether the chosen response is shown first; fixed per record so reruns ask the same question. */
export const chosenFirst = (id: string): boolean => Number.parseInt(shortHash(id, 2), 16) % 2 === 0;

/**
 * Stage 4, expert evaluation: the judge sees chosen and rejected in a per-record random order and
 * must prefer the chosen one with a score at the threshold. A pair with an empty or repeated side
 * never passes, whatever the judge says.
 */
export async function evaluate(task: ShardTask, deps: StageDeps): Promise<ShardResult> {
  return runShardStage(
    {
      stage: 'evaluate',
      schema: RespondedRecord,
      async handle(record, ctx): Promise<RespondedRecord | Rejection> {
        // Checked before the judge is asked, and binding whatever it would say.
        const defect = pairDefect(record, ctx.config.quality);
        if (defect) return new Rejection(defect.reason, defect.detail);
        const { maxTokens, temperature, criteria, threshold } = ctx.config.stages.evaluate;
        const first = chosenFirst(record.id);
        const [a, b] = first ? [record.chosen, record.text] : [record.text, record.chosen];
        const verdict = await ctx.judge({
          system: ctx.template.system,
          prompt: renderTemplate(ctx.template.user, { criteria, instruction: record.instruction, a, b }),
          maxTokens,
          temperature,
          schema: EvaluateVerdict,
          toolName: 'record_preference',
          toolDescription: 'Record which response is preferred, the rationale and the rubric score.',
        });
        if (verdict instanceof Rejection) return verdict;
        const chosenLabel = first ? 'A' : 'B';
        if (verdict.preferred !== chosenLabel)
          return new Rejection(
            'rejected-preferred',
            `the judge preferred the rejected text: ${verdict.rationale}`,
          );
        if (verdict.score < threshold)
          return new Rejection('low-score', `score ${verdict.score} < ${threshold}: ${verdict.rationale}`);
        const trace = {
          model: ctx.model.spec,
          template: ctx.templateHash,
          score: verdict.score,
          rationale: verdict.rationale,
          order: first ? ('chosen-first' as const) : ('rejected-first' as const),
        };
        return { ...record, trace: { ...record.trace, evaluate: trace } };
      },
    },
    task,
    deps,
  );
}
