import type { StageDeps } from '../deps.js';
import { renderTemplate } from '../prompts/templates.js';
import { chosenDefect } from '../quality/gates.js';
import { normalizeText } from '../records.js';
import { InducedRecord, type RespondedRecord, type ShardResult, type ShardTask } from '../schemas.js';
import { Rejection, runShardStage } from './shard-stage.js';

/** Stage 3, preferred response generation: the expert model writes the chosen response. */
export async function respond(task: ShardTask, deps: StageDeps): Promise<ShardResult> {
  return runShardStage(
    {
      stage: 'respond',
      schema: InducedRecord,
      async handle(record, ctx): Promise<RespondedRecord | Rejection> {
        const { maxTokens, temperature } = ctx.config.stages.respond;
        const chosen = normalizeText(
          await ctx.generate({
            system: ctx.template.system,
            prompt: renderTemplate(ctx.template.user, { instruction: record.instruction }),
            maxTokens,
            temperature,
          }),
        );
        const defect = chosenDefect({ ...record, chosen }, ctx.config.quality);
        if (defect) return new Rejection(defect.reason, defect.detail);
        return {
          ...record,
          chosen,
          trace: { ...record.trace, respond: { model: ctx.model.spec, template: ctx.templateHash } },
        };
      },
    },
    task,
    deps,
  );
}
