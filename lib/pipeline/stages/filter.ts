import { z } from 'zod';
import type { StageDeps } from '../deps.js';
import { renderTemplate } from '../prompts/templates.js';
import { InducedRecord, type ShardResult, type ShardTask } from '../schemas.js';
import { Rejection, runShardStage } from './shard-stage.js';

/** The filter judge's answer: a one-sentence rationale, then a 1-5 rubric score. */
export const FilterVerdict = z.object({
  rationale: z
    .string()
    .min(1)
    .max(1000)
    .describe('One sentence on why the instruction fits the text or not.'),
  score: z.number().int().min(1).max(5).describe('1 incoherent or unrelated ... 5 an exact, natural fit.'),
});
export type FilterVerdict = z.infer<typeof FilterVerdict>;

/** Stage 2, low-quality instruction filter: an expert judge keeps coherent, on-target instructions. */
export async function filter(task: ShardTask, deps: StageDeps): Promise<ShardResult> {
  return runShardStage(
    {
      stage: 'filter',
      schema: InducedRecord,
      async handle(record, ctx): Promise<InducedRecord | Rejection> {
        const { maxTokens, temperature, criteria, threshold } = ctx.config.stages.filter;
        const verdict = await ctx.judge({
          system: ctx.template.system,
          prompt: renderTemplate(ctx.template.user, {
            criteria,
            instruction: record.instruction,
            text: record.text,
          }),
          maxTokens,
          temperature,
          schema: FilterVerdict,
          toolName: 'rate_instruction',
          toolDescription: 'Record the rubric score and rationale for the instruction.',
        });
        if (verdict instanceof Rejection) return verdict;
        if (verdict.score < threshold)
          return new Rejection(
            'low-quality-instruction',
            `score ${verdict.score} < ${threshold}: ${verdict.rationale}`,
          );
        const trace = { model: ctx.model.spec, template: ctx.templateHash, ...verdict };
        return { ...record, trace: { ...record.trace, filter: trace } };
      },
    },
    task,
    deps,
  );
}
