import type { z } from 'zod';
import { JudgeAnswerError } from '../../lib/pipeline/errors.js';
import type {
  GenerateRequest,
  GenerateResult,
  JudgeRequest,
  JudgeResult,
  ModelClient,
} from '../../lib/pipeline/models/model-client.js';

/** The phrase every chosen response of the fake starts with, so its judge can find it. */
export const FAKE_SAFE_PREFIX = 'I will not help with that';

const usageOf = (req: GenerateRequest, text: string) => ({
  inputTokens: Math.ceil((req.system.length + req.prompt.length) / 4),
  outputTokens: Math.ceil(text.length / 4),
});

const between = (text: string, tag: string) =>
  new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(text)?.[1]?.trim() ?? '';

/**
 * A deterministic model for tests. By default it plays every stage sensibly: it induces an
 * instruction from the text, writes a safe chosen response, and judges in favour of that response.
 * Each behaviour can be replaced.
 */
export class FakeModel implements ModelClient {
  readonly calls: { kind: 'generate' | 'judge'; request: GenerateRequest }[] = [];

  constructor(
    readonly spec = 'bedrock:fake',
    private readonly behaviour: {
      generate?: (req: GenerateRequest) => string | Promise<string>;
      judge?: (req: GenerateRequest & { toolName: string }) => unknown;
    } = {},
  ) {}

  get modelId() {
    return this.spec;
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    this.calls.push({ kind: 'generate', request });
    const text = this.behaviour.generate ? await this.behaviour.generate(request) : defaultGenerate(request);
    return { text, usage: usageOf(request, text) };
  }

  async judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    this.calls.push({ kind: 'judge', request });
    const raw = this.behaviour.judge ? await this.behaviour.judge(request) : defaultJudge(request);
    const usage = usageOf(request, JSON.stringify(raw ?? null));
    const parsed = (request.schema as z.ZodType<T>).safeParse(raw);
    if (!parsed.success) throw new JudgeAnswerError(`invalid answer: ${parsed.error.message}`, usage);
    return { value: parsed.data, usage };
  }
}

function defaultGenerate(req: GenerateRequest): string {
  // Few-shot prompts tag the text; a tuned model's reversed prompt ends with it in a bare block.
  const response =
    [...req.prompt.matchAll(/<response>([\s\S]*?)<\/response>/g)].pop()?.[1] ??
    /### Response:\n([\s\S]*)\n\n### Instruction:\n$/.exec(req.prompt)?.[1];
  if (response !== undefined) return `Write a post saying: ${response.split(/\s+/).slice(0, 12).join(' ')}`;
  const request = between(req.prompt, 'request');
  return `${FAKE_SAFE_PREFIX}. Rather than "${request.replace(/^Write a post saying: /, '')}", I can help you say how you feel instead.`;
}

function defaultJudge(req: GenerateRequest & { toolName: string }): unknown {
  if (req.toolName === 'record_preference') {
    const preferred = between(req.prompt, 'response_a').startsWith(FAKE_SAFE_PREFIX) ? 'A' : 'B';
    return { preferred, rationale: 'It declines and offers a safe alternative.', score: 5 };
  }
  return { rationale: 'The instruction fits the text.', score: 4 };
}

/** A model registry over fixed clients, by spec. */
export const fakeRegistry = (clients: Record<string, FakeModel> | FakeModel) => ({
  get: async (spec: string) =>
    clients instanceof FakeModel ? clients : (clients[spec] ?? new FakeModel(spec)),
});
