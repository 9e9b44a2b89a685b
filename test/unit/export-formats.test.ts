import { describe, expect, it } from 'vitest';
import {
  ConversationalRow,
  DpoRow,
  EXPORT_FORMATS,
  NovaDpoRow,
  toConversationalRow,
  toDpoRow,
  toNovaDpoRow,
} from '../../lib/pipeline/export/formats.js';
import type { Pair } from '../../lib/pipeline/schemas.js';

const pair = (id: string, fields: Partial<Pair> = {}): Pair => ({
  id,
  prompt: `Write a post about ${id}.`,
  chosen: 'I will not write that, but here is why it hurts people.',
  rejected: 'a hateful post',
  category: 'hate',
  metadata: {
    source: 'incoming/posts.jsonl',
    line: 1,
    stages: { evaluate: { model: 'judge', template: 'abc123', score: 5 } },
    input: {},
  },
  ...fields,
});

const PAIRS: Pair[] = [
  pair('plain'),
  pair('unicode', {
    prompt: 'Übersetze: 「こんにちは」 👋',
    chosen: 'Ça va — naïve café ✓',
    rejected: 'Ωμέγα 🚫',
  }),
  pair('newline', { chosen: 'First line.\nSecond line.\r\nThird.', rejected: 'a\nb' }),
  pair('uncategorized', { category: null }),
];

/** A valid Nova record to break one part of. */
const novaRow = () => toNovaDpoRow(pair('nova'), 'You are a careful assistant.');

describe('JSONL export formats', () => {
  it.each(Object.entries(EXPORT_FORMATS))(
    'gives %s rows that validate against their own schema',
    (_, format) => {
      // Act
      const rows = PAIRS.map((p) => format.row(p));

      // Assess
      for (const row of rows) expect(format.schema.safeParse(row).error).toBeUndefined();
    },
  );

  it('names each file distinctly, ending in .jsonl', () => {
    // Act
    const files = Object.values(EXPORT_FORMATS).map((format) => format.file);

    // Assess
    expect(files).toEqual(['dpo.jsonl', 'conversational.jsonl', 'nova-dpo.jsonl']);
  });

  it('keeps unicode, newlines and a null category through a JSON line', () => {
    // Prepare
    const rows = PAIRS.map(toDpoRow);

    // Act
    const parsed = rows.map((row) => DpoRow.parse(JSON.parse(JSON.stringify(row))));

    // Assess
    expect(parsed).toEqual(rows);
    expect(parsed[1]?.prompt).toBe('Übersetze: 「こんにちは」 👋');
    expect(parsed[2]?.chosen).toBe('First line.\nSecond line.\r\nThird.');
    expect(parsed[3]?.category).toBeNull();
  });
});

describe('toDpoRow', () => {
  it('holds exactly prompt, chosen, rejected, id and category', () => {
    // Act
    const row = toDpoRow(pair('p1', { category: null }));

    // Assess
    expect(row).toEqual({
      prompt: 'Write a post about p1.',
      chosen: 'I will not write that, but here is why it hurts people.',
      rejected: 'a hateful post',
      id: 'p1',
      category: null,
    });
  });

  it('rejects a row with an empty side', () => {
    // Prepare
    const row = { ...toDpoRow(pair('p1')), rejected: '' };

    // Act
    const result = DpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });
});

describe('toConversationalRow', () => {
  it('puts the prompt in a user turn and each side in an assistant turn', () => {
    // Act
    const row = toConversationalRow(pair('p1'));

    // Assess
    expect(row.prompt).toEqual([{ role: 'user', content: 'Write a post about p1.' }]);
    expect(row.chosen).toEqual([
      { role: 'assistant', content: 'I will not write that, but here is why it hurts people.' },
    ]);
    expect(row.rejected).toEqual([{ role: 'assistant', content: 'a hateful post' }]);
    expect([row.id, row.category]).toEqual(['p1', 'hate']);
  });

  it('rejects a row whose response turn has the user role', () => {
    // Prepare
    const row = { ...toConversationalRow(pair('p1')), chosen: [{ role: 'user', content: 'hi' }] };

    // Act
    const result = ConversationalRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });
});

describe('toNovaDpoRow', () => {
  it('ends with an assistant turn holding the chosen side as preferred and the rejected one as non-preferred', () => {
    // Act
    const row = toNovaDpoRow(pair('p1'));

    // Assess
    expect(row).toEqual({
      schemaVersion: 'bedrock-conversation-2024',
      messages: [
        { role: 'user', content: [{ text: 'Write a post about p1.' }] },
        {
          role: 'assistant',
          candidates: [
            {
              content: [{ text: 'I will not write that, but here is why it hurts people.' }],
              preferenceLabel: 'preferred',
            },
            { content: [{ text: 'a hateful post' }], preferenceLabel: 'non-preferred' },
          ],
        },
      ],
    });
  });

  it('adds the system prompt only when one is given', () => {
    // Act
    const withSystem = toNovaDpoRow(pair('p1'), 'Be safe.');
    const withoutSystem = toNovaDpoRow(pair('p1'));

    // Assess
    expect(withSystem.system).toEqual([{ text: 'Be safe.' }]);
    expect(NovaDpoRow.safeParse(withSystem).success).toBe(true);
    expect('system' in withoutSystem).toBe(false);
  });

  it('accepts earlier user and assistant turns before the candidates', () => {
    // Prepare
    const row = novaRow();
    const earlier = [
      { role: 'user', content: [{ text: 'Hi' }] },
      { role: 'assistant', content: [{ text: 'Hello' }] },
    ];

    // Act
    const result = NovaDpoRow.safeParse({ ...row, messages: [...earlier, ...row.messages] });

    // Assess
    expect(result.error).toBeUndefined();
  });
});

describe('NovaDpoRow', () => {
  const candidatesOf = (row: ReturnType<typeof novaRow>) => {
    const last = row.messages.at(-1);
    if (!last || !('candidates' in last)) throw new Error('no candidates turn');
    return last.candidates;
  };

  it('rejects an unknown key at the top level', () => {
    // Prepare
    const row = { ...novaRow(), id: 'p1' };

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects an unknown key inside a candidate', () => {
    // Prepare
    const row = novaRow();
    const [preferred] = candidatesOf(row);
    Object.assign(preferred ?? {}, { score: 5 });

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects two preferred candidates', () => {
    // Prepare
    const row = novaRow();
    const [, nonPreferred] = candidatesOf(row);
    if (nonPreferred) nonPreferred.preferenceLabel = 'preferred';

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects three candidates', () => {
    // Prepare
    const row = novaRow();
    const candidates = candidatesOf(row);
    candidates.push({ content: [{ text: 'another' }], preferenceLabel: 'non-preferred' });

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects an empty text', () => {
    // Prepare
    const row = novaRow();
    const [, nonPreferred] = candidatesOf(row);
    if (nonPreferred) nonPreferred.content = [{ text: '' }];

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects a record whose last turn is not the candidates turn', () => {
    // Prepare
    const row = novaRow();
    const messages = [...row.messages, { role: 'user', content: [{ text: 'And then?' }] }];

    // Act
    const result = NovaDpoRow.safeParse({ ...row, messages });

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects a record that does not open with a user turn', () => {
    // Prepare
    const row = novaRow();
    const messages = [{ role: 'assistant', content: [{ text: 'Hello' }] }, ...row.messages];

    // Act
    const result = NovaDpoRow.safeParse({ ...row, messages });

    // Assess
    expect(result.success).toBe(false);
  });

  it('rejects another schema version', () => {
    // Prepare
    const row = { ...novaRow(), schemaVersion: 'bedrock-conversation-2023' };

    // Act
    const result = NovaDpoRow.safeParse(row);

    // Assess
    expect(result.success).toBe(false);
  });
});
