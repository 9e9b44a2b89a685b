import type { StageDeps } from '../deps.js';
import { renderTemplate } from '../prompts/templates.js';
import { instructionDefect } from '../quality/gates.js';
import { normalizeText } from '../records.js';
import { type InducedRecord, InputRecord, type ShardResult, type ShardTask } from '../schemas.js';
import { Rejection, runShardStage } from './shard-stage.js';

/** Strips what models wrap an instruction in: a label, quotes, a trailing response block. */
export function cleanInstruction(raw: string): string {
  let text = normalizeText(raw);
  text = text.split(/\n\s*#{2,}\s*(response|instruction)\b/i)[0] ?? '';
  text = text.replace(/^(#+\s*)?(instruction|prompt|request)\s*:\s*/i, '');
  text = text.replace(/^["'“”‘’`]+|["'“”‘’`]+$/g, '');
  return text.trim();
}

/** Stage 1, instruction induction: writes the instruction each text answers. */
export async function induce(task: ShardTask, deps: StageDeps): Promise<ShardResult> {
  return runShardStage(
    {
      stage: 'induce',
      schema: InputRecord,
      async handle(record, ctx): Promise<InducedRecord | Rejection> {
        const { maxTokens, temperature } = ctx.config.stages.induce;
        const raw = await ctx.generate({
          system: ctx.template.system,
          prompt: renderTemplate(ctx.template.user, { text: record.text }, { raw: ctx.template.raw }),
          maxTokens,
          temperature,
        });
        const instruction = cleanInstruction(raw);
        const defect = instructionDefect(instruction, record.text, ctx.config.quality);
        if (defect) return new Rejection(defect.reason, defect.detail);
        return {
          ...record,
          instruction,
          trace: { ...record.trace, induce: { model: ctx.model.spec, template: ctx.templateHash } },
        };
      },
    },
    task,
    deps,
  );
}
