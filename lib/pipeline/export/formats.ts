import { z } from 'zod';
import type { Pair } from '../schemas.js';

const Text = z.string().min(1);
const Id = z.string().min(1);
const Category = z.string().nullable();

/** One row of the TRL / Hugging Face "standard" preference format, with the pair's id and category. */
export const DpoRow = z.object({
  prompt: Text,
  chosen: Text,
  rejected: Text,
  id: Id,
  category: Category,
});
export type DpoRow = z.infer<typeof DpoRow>;

/** The pair as a standard preference row. */
export const toDpoRow = (pair: Pair): DpoRow => ({
  prompt: pair.prompt,
  chosen: pair.chosen,
  rejected: pair.rejected,
  id: pair.id,
  category: pair.category,
});

const UserMessage = z.object({ role: z.literal('user'), content: Text });
const AssistantMessage = z.object({ role: z.literal('assistant'), content: Text });

/**
 * One row of the TRL conversational preference format with an explicit prompt: the prompt is the user
 * turn, each side the assistant turn that answers it.
 */
export const ConversationalRow = z.object({
  prompt: z.tuple([UserMessage]),
  chosen: z.tuple([AssistantMessage]),
  rejected: z.tuple([AssistantMessage]),
  id: Id,
  category: Category,
});
export type ConversationalRow = z.infer<typeof ConversationalRow>;

/** The pair as a conversational preference row. */
export const toConversationalRow = (pair: Pair): ConversationalRow => ({
  prompt: [{ role: 'user', content: pair.prompt }],
  chosen: [{ role: 'assistant', content: pair.chosen }],
  rejected: [{ role: 'assistant', content: pair.rejected }],
  id: pair.id,
  category: pair.category,
});

/** The schema version Bedrock and SageMaker expect in every Nova customization record. */
export const NOVA_SCHEMA_VERSION = 'bedrock-conversation-2024';

// Nova rejects records with keys it does not know, so every object here is strict.
const NovaText = z.strictObject({ text: Text });
const NovaContent = z.array(NovaText).min(1);
const NovaUserTurn = z.strictObject({ role: z.literal('user'), content: NovaContent });
const NovaAssistantTurn = z.strictObject({ role: z.literal('assistant'), content: NovaContent });
const NovaCandidate = z.strictObject({
  content: NovaContent,
  preferenceLabel: z.enum(['preferred', 'non-preferred']),
});
const NovaPreferenceTurn = z.strictObject({
  role: z.literal('assistant'),
  candidates: z
    .array(NovaCandidate)
    .length(2)
    .refine(
      (candidates) => candidates[0]?.preferenceLabel !== candidates[1]?.preferenceLabel,
      'needs one preferred and one non-preferred candidate',
    ),
});
const NovaTurn = z.union([NovaUserTurn, NovaAssistantTurn, NovaPreferenceTurn]);

/**
 * One record of the Amazon Nova DPO format (Bedrock and SageMaker Nova customization): earlier turns as
 * in SFT, user and assistant alternating from a user turn, and a last assistant turn that holds two
 * candidates, one preferred and one non-preferred, instead of content.
 */
export const NovaDpoRow = z.strictObject({
  schemaVersion: z.literal(NOVA_SCHEMA_VERSION),
  system: z.array(NovaText).min(1).optional(),
  messages: z
    .array(NovaTurn)
    .min(2)
    .superRefine((messages, ctx) => {
      messages.forEach((message, i) => {
        const role = i % 2 === 0 ? 'user' : 'assistant';
        if (message.role !== role) {
          ctx.addIssue({ code: 'custom', path: [i, 'role'], message: `turn ${i} must be ${role}` });
        }
        const last = i === messages.length - 1;
        if ('candidates' in message !== last) {
          ctx.addIssue({
            code: 'custom',
            path: [i],
            message: last ? 'the last turn must hold the candidates' : 'only the last turn holds candidates',
          });
        }
      });
    }),
});
export type NovaDpoRow = z.infer<typeof NovaDpoRow>;

/** The pair as a Nova DPO record; the system prompt, when given, opens the record. */
export const toNovaDpoRow = (pair: Pair, system?: string): NovaDpoRow => ({
  schemaVersion: NOVA_SCHEMA_VERSION,
  ...(system ? { system: [{ text: system }] } : {}),
  messages: [
    { role: 'user', content: [{ text: pair.prompt }] },
    {
      role: 'assistant',
      candidates: [
        { content: [{ text: pair.chosen }], preferenceLabel: 'preferred' },
        { content: [{ text: pair.rejected }], preferenceLabel: 'non-preferred' },
      ],
    },
  ],
});

/** A JSONL export: its file name, what it holds, how a pair becomes a row, and the row's schema. */
export interface ExportFormat<Row> {
  readonly file: string;
  readonly description: string;
  readonly row: (pair: Pair, system?: string) => Row;
  readonly schema: z.ZodType<Row>;
}

/** Every JSONL export, by format name, for a caller to loop over. */
export const EXPORT_FORMATS = {
  dpo: {
    file: 'dpo.jsonl',
    description:
      'TRL / Hugging Face standard preference format: prompt, chosen, rejected strings, id, category',
    row: toDpoRow,
    schema: DpoRow,
  },
  conversational: {
    file: 'conversational.jsonl',
    description: 'TRL conversational preference format: prompt, chosen, rejected as message lists',
    row: toConversationalRow,
    schema: ConversationalRow,
  },
  nova: {
    file: 'nova-dpo.jsonl',
    description:
      'Amazon Nova DPO (Bedrock / SageMaker): the assistant turn as preferred and non-preferred candidates',
    row: toNovaDpoRow,
    schema: NovaDpoRow,
  },
} as const satisfies {
  dpo: ExportFormat<DpoRow>;
  conversational: ExportFormat<ConversationalRow>;
  nova: ExportFormat<NovaDpoRow>;
};

/** The name of a JSONL export. */
export type ExportFormatName = keyof typeof EXPORT_FORMATS;
