import type { StageDeps } from '../deps.js';
import { renderTemplate } from '../prompts/templates.js';
import { normalizeText, sameText } from '../records.js';
import { InducedRecord, type RespondedRecord, type ShardResult, type ShardTask } from '../schemas.js';
import { Rejection, runShardStage } from './shard-stage.js';

/** Stage 3, preferred response generation: the expert model writes the chosen response. */
export async function respond(task: ShardTask, deps: StageDeps): Promise<ShardResult> {
  return runShardStage(
    {
      stage: 'respond',
      from: 'filter',
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
        if (chosen === '') return new Rejection('empty-response', 'the model wrote no response');
        if (sameText(chosen, record.text))
          return new Rejection('chosen-equals-rejected', 'the response repeats the rejected text');
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
