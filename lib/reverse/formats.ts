import { z } from 'zod';
import { ConfigError } from '../pipeline/errors.js';
import { REVERSED_PREAMBLE, reversedPrompt } from '../pipeline/prompts/induction.js';

/** The training record formats of reversed instruction data, by `--format` name. */
export const REVERSE_FORMATS = ['prompt-completion', 'converse', 'nova', 'alpaca', 'messages'] as const;
export type ReverseFormat = (typeof REVERSE_FORMATS)[number];

/** One reversed example: the response the model reads and the instruction it learns to write. */
export interface ReversePair {
  readonly instruction: string;
  readonly response: string;
}

const Text = z.string().min(1);

/** Bedrock fine-tuning of non-conversational models (Titan Text, Cohere Command, Llama 3.1). */
export const PromptCompletionRecord = z.strictObject({ prompt: Text, completion: Text });
export type PromptCompletionRecord = z.infer<typeof PromptCompletionRecord>;

const UserTurn = z.strictObject({ role: z.literal('user'), content: Text });
const AssistantTurn = z.strictObject({ role: z.literal('assistant'), content: Text });

/**
 * Bedrock fine-tuning of conversational models (Claude 3 Haiku, Llama 3.2 and 3.3): one user turn and
 * the assistant turn that answers it. No `system` key: the reversed prompt has no system prompt.
 */
export const ConverseRecord = z.strictObject({ messages: z.tuple([UserTurn, AssistantTurn]) });
export type ConverseRecord = z.infer<typeof ConverseRecord>;

/** The schema version Bedrock expects in every Nova customization record. */
export const NOVA_SCHEMA_VERSION = 'bedrock-conversation-2024';

// Nova rejects keys it does not know, so every object is strict. `system` is optional in Nova's format
// and the reversed prompt has none, so it is left out rather than sent as an empty list.
const NovaContent = z.tuple([z.strictObject({ text: Text })]);

/** Amazon Nova fine-tuning on Bedrock (bedrock-conversation-2024): one user and one assistant turn. */
export const NovaRecord = z.strictObject({
  schemaVersion: z.literal(NOVA_SCHEMA_VERSION),
  messages: z.tuple([
    z.strictObject({ role: z.literal('user'), content: NovaContent }),
    z.strictObject({ role: z.literal('assistant'), content: NovaContent }),
  ]),
});
export type NovaRecord = z.infer<typeof NovaRecord>;

/**
 * The paper's recipe for other trainers (LLaMA-Factory, axolotl): the reversed preamble as the
 * instruction, the response as the input, the instruction as the output.
 */
export const AlpacaRecord = z.strictObject({
  instruction: z.literal(REVERSED_PREAMBLE),
  input: Text,
  output: Text,
});
export type AlpacaRecord = z.infer<typeof AlpacaRecord>;

/** OpenAI chat fine-tuning and TRL's SFTTrainer: one user turn and the assistant turn that answers it. */
export const MessagesRecord = z.strictObject({ messages: z.tuple([UserTurn, AssistantTurn]) });
export type MessagesRecord = z.infer<typeof MessagesRecord>;

/** Each format's record schema. */
export const REVERSE_RECORD_SCHEMAS = {
  'prompt-completion': PromptCompletionRecord,
  converse: ConverseRecord,
  nova: NovaRecord,
  alpaca: AlpacaRecord,
  messages: MessagesRecord,
} as const satisfies Record<ReverseFormat, z.ZodType>;

/** The record of a format. */
export type ReverseRecord<F extends ReverseFormat = ReverseFormat> = z.infer<
  (typeof REVERSE_RECORD_SCHEMAS)[F]
>;

/** What each format is for, as the command's usage text says. */
export const REVERSE_FORMAT_USES: Record<ReverseFormat, string> = {
  'prompt-completion': 'Bedrock: Amazon Titan Text, Cohere Command, Meta Llama 3.1',
  converse: 'Bedrock: Anthropic Claude 3 Haiku, Meta Llama 3.2 and 3.3',
  nova: 'Bedrock: Amazon Nova Micro, Lite and Pro',
  alpaca: 'LLaMA-Factory, axolotl and other Alpaca-style trainers (the paper)',
  messages: 'OpenAI chat fine-tuning, TRL SFTTrainer',
};

const BUILDERS: { readonly [F in ReverseFormat]: (pair: ReversePair) => ReverseRecord<F> } = {
  'prompt-completion': ({ instruction, response }) => ({
    prompt: reversedPrompt(response),
    completion: instruction,
  }),
  converse: ({ instruction, response }) => ({
    messages: [
      { role: 'user', content: reversedPrompt(response) },
      { role: 'assistant', content: instruction },
    ],
  }),
  nova: ({ instruction, response }) => ({
    schemaVersion: NOVA_SCHEMA_VERSION,
    messages: [
      { role: 'user', content: [{ text: reversedPrompt(response) }] },
      { role: 'assistant', content: [{ text: instruction }] },
    ],
  }),
  alpaca: ({ instruction, response }) => ({
    instruction: REVERSED_PREAMBLE,
    input: response,
    output: instruction,
  }),
  messages: ({ instruction, response }) => ({
    messages: [
      { role: 'user', content: reversedPrompt(response) },
      { role: 'assistant', content: instruction },
    ],
  }),
};

/**
 * The training record of a reversed example in a format: the model reads the reversed prompt around
 * the response (`reversedPrompt`, template `reversed-v1`) and learns to write the instruction. The
 * `alpaca` record carries the same preamble, but the trainer's own template wraps its fields.
 */
export function formatRecord<F extends ReverseFormat>(format: F, pair: ReversePair): ReverseRecord<F> {
  return BUILDERS[format](pair);
}

/** A record that does not match its format's schema: a bug, never the data's fault. */
export class ReverseRecordError extends Error {
  override name = 'ReverseRecordError';
}

/** Checks a record against its format's schema; throws a ReverseRecordError naming what is wrong. */
export function checkRecord(format: ReverseFormat, record: unknown, id: string): void {
  const result = REVERSE_RECORD_SCHEMAS[format].safeParse(record);
  if (!result.success)
    throw new ReverseRecordError(
      `the ${format} record of ${id} does not match its schema: ${z.prettifyError(result.error).replace(/\n/g, ' ')}`,
    );
}

/**
 * The format Bedrock fine-tuning takes for each family of base models. Only text models that Bedrock can
 * fine-tune are listed: an embedding or image model id fits none of them.
 */
const TUNING_FORMATS: readonly (readonly [RegExp, ReverseFormat])[] = [
  [/^amazon\.titan-(text|tg1)-/, 'prompt-completion'],
  [/^cohere\.command-/, 'prompt-completion'],
  [/^meta\.llama3-1-/, 'prompt-completion'],
  [/^anthropic\.claude-3-haiku/, 'converse'],
  [/^meta\.llama3-[23]-/, 'converse'],
  [/^amazon\.nova-/, 'nova'],
];

/**
 * The training format Bedrock fine-tuning wants for a base model: a model id such as
 * `amazon.nova-micro-v1:0:128k`, a foundation-model ARN, or a `bedrock:` model spec. Throws a
 * ConfigError naming the id when Bedrock cannot fine-tune it with reversed instruction data.
 */
export function tuningFormatOf(baseModelId: string): ReverseFormat {
  const id = baseModelId
    .trim()
    .toLowerCase()
    .replace(/^bedrock:/, '')
    .replace(/^arn:aws[\w-]*:bedrock:[^:]*:\d*:foundation-model\//, '');
  const found = TUNING_FORMATS.find(([pattern]) => pattern.test(id));
  if (!found)
    throw new ConfigError(
      `no fine-tuning format for base model "${baseModelId}": Bedrock fine-tunes Amazon Titan Text, ` +
        'Cohere Command, Meta Llama 3.1, 3.2 and 3.3, Anthropic Claude 3 Haiku and Amazon Nova with text data',
    );
  return found[1];
}

const REVERSED = new RegExp(
  `^${REVERSED_PREAMBLE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n\\n### Response:\\n([\\s\\S]*)\\n\\n### Instruction:\\n$`,
);

/**
 * The pair a training record of any reversed format was written from, or undefined when the value is
 * not such a record: the inverse of {@link formatRecord}.
 */
export function unreverseRecord(value: unknown): ReversePair | undefined {
  const fromPrompt = (prompt: string, instruction: string) => {
    const response = REVERSED.exec(prompt)?.[1];
    return response === undefined ? undefined : { response, instruction };
  };
  const alpaca = AlpacaRecord.safeParse(value);
  if (alpaca.success) return { response: alpaca.data.input, instruction: alpaca.data.output };
  const completion = PromptCompletionRecord.safeParse(value);
  if (completion.success) return fromPrompt(completion.data.prompt, completion.data.completion);
  const turns = MessagesRecord.safeParse(value);
  if (turns.success) return fromPrompt(turns.data.messages[0].content, turns.data.messages[1].content);
  const nova = NovaRecord.safeParse(value);
  if (nova.success)
    return fromPrompt(nova.data.messages[0].content[0].text, nova.data.messages[1].content[0].text);
  return undefined;
}
