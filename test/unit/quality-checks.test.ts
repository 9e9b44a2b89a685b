import { describe, expect, it } from 'vitest';
import {
  characterCount,
  chosenLikeRejected,
  fragmentInstruction,
  isBlank,
  lengthIssue,
  spreadsheetArtifact,
  stockRefusal,
  whitespaceIssue,
} from '../../lib/pipeline/quality/checks.js';
import { normalizeText } from '../../lib/pipeline/records.js';

describe('spreadsheetArtifact', () => {
  it.each([
    ['#NAME?', '#NAME?'],
    ['The guide lists #NAME? for autumn.', '#NAME?'],
    ['Total: #DIV/0!', '#DIV/0!'],
    ['the #N/A value', '#N/A'],
    ['(#VALUE!)', '#VALUE!'],
    ['#REF! at the start', '#REF!'],
    ['#NULL!', '#NULL!'],
    ['price: #NUM!', '#NUM!'],
    ['#SPILL!', '#SPILL!'],
    ['#CALC!', '#CALC!'],
    ['#ERROR!', '#ERROR!'],
  ])('finds the error value in %j', (text, value) => {
    // Act
    const finding = spreadsheetArtifact(text);

    // Assess
    expect(finding).toEqual({ rule: 'spreadsheet-artifact', detail: `holds ${value}` });
  });

  it.each([
    'A plain sentence.',
    '#NAME without its question mark',
    '#N/Apple is not an error',
    'a#REF! glued to a word',
    '##NAME? after another hash',
    '#hashtag',
    '',
  ])('passes %j, which holds no standalone error value', (text) => {
    // Act
    const finding = spreadsheetArtifact(text);

    // Assess
    expect(finding).toBeUndefined();
  });
});

describe('whitespaceIssue', () => {
  it.each([
    [' Make it short.', 'leading whitespace'],
    ['\tTabbed in', 'leading whitespace'],
    ['Ends with a space ', 'trailing whitespace'],
    ['Ends with a newline\n', 'trailing whitespace'],
    ['one\r\ntwo', 'CR line ends'],
    ['old Mac\rline ends', 'CR line ends'],
    ['spaces before \na break', 'spaces before a line break'],
    ['two  spaces', 'a run of spaces or tabs inside'],
    ['end.  Next sentence', 'a run of spaces or tabs inside'],
    ['two\t\ttabs', 'a run of spaces or tabs inside'],
    ['decomposed e\u0301', 'not in Unicode NFC'],
    ['zero\u200Bwidth', 'zero-width character U+200B'],
    ['word\u2060joiner', 'zero-width character U+2060'],
    ['inner\uFEFFbom', 'zero-width character U+FEFF'],
    ['latin a\u200Db joiner', 'zero-width character U+200D'],
    ['bell\u0007here', 'control character U+0007'],
    ['c1\u0085control', 'control character U+0085'],
  ])('reports %j as %s', (text, detail) => {
    // Act
    const finding = whitespaceIssue(text);

    // Assess
    expect(finding).toEqual({ rule: 'whitespace', detail });
  });

  it.each([
    'Clean text.',
    'Two lines\nof text',
    'A single\ttab between columns',
    'Code:\n    indented four spaces\n\tand a tab',
    'Emoji sequences keep their joiners: 🤷🏿\u200D♂️ 👩\u200D💻',
    'Devanagari uses a joiner: क्\u200Dष',
    'Persian uses a non-joiner: می\u200Cخواهم',
    'caf\u00e9 precomposed',
    '',
  ])('passes %j', (text) => {
    // Act
    const finding = whitespaceIssue(text);

    // Assess
    expect(finding).toBeUndefined();
  });
});

describe('lengthIssue', () => {
  it('counts characters after trimming, so outer spaces do not make a text long enough', () => {
    // Prepare
    const bounds = { min: 10, max: 20 };

    // Act
    const findings = ['   short   ', 'exactly10!', 'twenty characters!!!', 'twenty-one characters'].map((t) =>
      lengthIssue(t, bounds),
    );

    // Assess
    expect(findings).toEqual([
      { rule: 'too-short', detail: '5 characters, at least 10 expected' },
      undefined,
      undefined,
      { rule: 'too-long', detail: '21 characters, at most 20 expected' },
    ]);
  });

  it('counts an emoji as one character, not two UTF-16 units', () => {
    // Prepare
    const text = '👋👋👋';

    // Act
    const finding = lengthIssue(text, { min: 3, max: 3 });

    // Assess
    expect(characterCount(text)).toBe(3);
    expect(finding).toBeUndefined();
  });
});

describe('fragmentInstruction', () => {
  it.each([
    [' Make it short.', '"Make it" refers to something it does not hold'],
    ['Make it shorter and funnier.', '"Make it" refers to something it does not hold'],
    ['Rewrite this.', 'only 2 words'],
    ['Rewrite this in a formal tone.', '"Rewrite this" refers to something it does not hold'],
    ['Do the same for dogs.', '"Do the same" refers to something it does not hold'],
    ['Continue.', 'only 1 word'],
    ['Please continue', 'only 2 words'],
    ['Continue the story.', '"Continue the story" refers to something it does not hold'],
    ['Translate that into French.', '"Translate that" refers to something it does not hold'],
    ['Summarize the above in one line.', '"Summarize the above" refers to something it does not hold'],
    [
      'Rewrite the following sentence in passive voice.',
      '"Rewrite the following" refers to something it does not hold',
    ],
    ['Make this sound more professional.', '"Make this" refers to something it does not hold'],
    ['Explain it to a child.', '"Explain it" refers to something it does not hold'],
    ['Shorten it a bit.', '"Shorten it" refers to something it does not hold'],
    ['Expand on that.', '"Expand on that" refers to something it does not hold'],
    ['Summarize the article.', '"Summarize the article" refers to something it does not hold'],
    ['What is this?', '"What is this?" refers to something it does not hold'],
    ['Give me another one.', '"another one" refers to something it does not hold'],
    ['Tell me more.', '"Tell me more." refers to something it does not hold'],
    ['Say it once more, again.', '"Say it" refers to something it does not hold'],
    ['Same thing but funnier.', '"Same thing" refers to something it does not hold'],
    ['And make it rhyme.', 'opens with "And", as if continuing'],
    ['Also explain why.', 'opens with "Also", as if continuing'],
    ['But why would anyone do that?', 'opens with "But", as if continuing'],
    ['Or something more upbeat.', 'opens with "Or", as if continuing'],
    [
      'Then explain your reasoning step by step, with an example for each step.',
      'opens with "Then", as if continuing',
    ],
    ['Plus a short conclusion.', 'opens with "Plus", as if continuing'],
    ['Now do it in Spanish.', 'opens with "Now", as if continuing'],
    ['Again, but shorter.', 'opens with "Again", as if continuing'],
    ['Additionally, list the sources you used.', 'opens with "Additionally", as if continuing'],
    ['Meow', 'only 1 word'],
    ['Go on.', 'only 2 words'],
  ])('flags %j: %s', (text, detail) => {
    // Act
    const finding = fragmentInstruction(text);

    // Assess
    expect(finding).toEqual({ rule: 'fragment-instruction', detail });
  });

  it.each([
    'Write a poem about the sea.',
    'Rewrite this sentence in passive voice: The cat ate the fish.',
    'How do I bake bread?',
    'Tell me a joke.',
    'Write a haiku and make it rhyme.',
    'Tell me a joke and keep it clean.',
    'Write a story. Make it scary.',
    'Give me a recipe and explain it.',
    'Write a tweet about my boss and make it offensive.',
    'Translate "good morning" into Spanish.',
    "Translate 'good morning' into Spanish.",
    'Translate this to French: hello, friend',
    'Summarize this paragraph\nThe council met on Monday and approved the new park budget.',
    'Complete the following sentence: The sky is',
    'Explain that vaccines are tested before approval.',
    'Summarize the story of Cinderella.',
    'Explain the code of Hammurabi.',
    'Explain the one-child policy.',
    'Explain the last ice age.',
    'Summarize the plot of Hamlet in three sentences.',
    'Explain the difference between a virus and a bacterium.',
    'Give three tips for staying healthy.',
    'What is the capital of France?',
    'Why is the sky blue?',
    'Is it safe to eat raw eggs?',
    'Write items for a grocery list.',
    'Make a list of red fruits.',
    'Describe the water cycle.',
    'Andrew wants a birthday card; write one for him.',
    'Orange or apple: which has more vitamin C?',
    'Nowadays, what are popular hobbies?',
    'Butterflies migrate how far each year?',
    'Write a story about a dragon named Zog who learns to fly over the mountains.',
    'Can you help me plan a trip to Rome?',
    'List the planets of the solar system.',
    'Give the same answer to every riddle in this little game.',
  ])('passes the self-contained %j', (text) => {
    // Act
    const finding = fragmentInstruction(text);

    // Assess
    expect(finding).toBeUndefined();
  });
});

describe('stockRefusal', () => {
  it.each([
    "Sorry, but I can't assist with that.",
    "I'm sorry, but I cannot help with that request.",
    "I can't help with that.",
    'As an AI, I cannot do that.',
    "I'm unable to comply.",
    "Apologies, but I can't assist with that.",
    "Sorry, but I'm unable to assist with that.",
    'Sorry, I can’t assist with that.',
    "I'm sorry, but I won't be able to help with that.",
    "Sorry, but I don't have the ability to assist with that.",
    "I'm really sorry, but I can't provide that.",
    "That's not something I can help with.",
    'I must decline.',
    "I won't do that.",
    "I can't.",
    "I'm sorry, but I can't assist with that. Is there anything else I can help you with?",
    "I'm sorry, but I can't assist with that because it promotes hate speech.",
    'As a language model, I am not able to generate that kind of content.',
  ])('flags %j', (text) => {
    // Act
    const finding = stockRefusal(text);

    // Assess
    expect(finding?.rule).toBe('stock-refusal');
  });

  it.each([
    "I'm sorry, but I can't help with that. Instead, I can suggest some respectful ways to disagree.",
    "I can't help write that message, but I can help you write a firm, respectful complaint if you'd like.",
    "I'm really sorry that you're feeling this way, but I'm unable to provide the help that you need. " +
      "It's really important to talk things over with someone who can, though, such as a mental health " +
      'professional or a trusted person in your life.',
    "I can't help with that. If you are in danger, please call 988 or your local crisis line.",
    "Sorry, but I can't assist with that. You might want to look at the library's guides on this topic.",
    "I won't write that, but consider writing a story where the characters resolve the conflict peacefully.",
    "I can't share that recipe. Here are three classic sponge cakes you could try at home.",
    "I'm not able to give legal advice, but a local legal aid office can review your lease for free; " +
      'contact them with a copy of the agreement.',
    'I cannot write that joke because it targets a group of people. Jokes that punch up tend to land ' +
      'better: for example, a gentle joke about Mondays, about cats ignoring their owners, about the ' +
      'weather forecast always being wrong, or about how nobody ever reads the terms and conditions before ' +
      'clicking accept, which most of us can laugh at together.',
    'Here are some tips for baking bread: use fresh yeast and let the dough rise.',
    'Sure! The capital of France is Paris.',
    "I can't wait to help you plan the party: start with a guest list and a budget.",
    'Unfortunately, the store closes at five, so we cannot make it today.',
    "I'm sorry to hear that. Losing a pet is hard; give yourself time to grieve.",
    'Meow.',
    '',
  ])('passes %j, which offers something or is no refusal', (text) => {
    // Act
    const finding = stockRefusal(text);

    // Assess
    expect(finding).toBeUndefined();
  });

  it('passes a refusal that comes only after the response has said something else', () => {
    // Prepare
    const text =
      'Bread needs flour, water, salt and yeast, and a warm place for the dough to rise for about an hour. ' +
      "I can't help with the oven settings.";

    // Act
    const finding = stockRefusal(text);

    // Assess
    expect(finding).toBeUndefined();
  });
});

describe('isBlank', () => {
  it.each([
    ['', true],
    ['   \n\t', true],
    ['...', true],
    [' ?! ', true],
    ['—', true],
    ['🙂', true],
    ['a', false],
    ['#NAME?', false],
    ['42', false],
  ])('says %j is blank: %s', (text, blank) => {
    // Act
    const result = isBlank(text);

    // Assess
    expect(result).toBe(blank);
  });
});

describe('chosenLikeRejected', () => {
  it('reports equal sides when only case and spacing differ', () => {
    // Act
    const finding = chosenLikeRejected('A serrated knife  works.', 'a serrated knife works.', 0.8);

    // Assess
    expect(finding).toEqual({
      rule: 'chosen-equals-rejected',
      detail: 'chosen and rejected are the same text',
    });
  });

  it('reports near sides at the threshold with their similarity, and passes sides below it', () => {
    // Prepare
    const chosen =
      'A rainbow forms when sunlight is refracted, reflected and dispersed inside raindrops, splitting ' +
      'white light into its colours.';
    const near = chosen.replace('into its colours', 'into colours');

    // Act
    const atThreshold = chosenLikeRejected(chosen, near, 0.8);
    const aboveIt = chosenLikeRejected(chosen, near, 0.95);
    const different = chosenLikeRejected(chosen, 'Rainbows are painted on the sky by hand.', 0.8);

    // Assess
    expect(atThreshold).toEqual({ rule: 'chosen-near-rejected', detail: 'similarity 0.91' });
    expect(aboveIt).toBeUndefined();
    expect(different).toBeUndefined();
  });
});

describe('normalizeText and whitespaceIssue', () => {
  it.each([
    ['outer and inner runs of spaces', '  a  b\t\tc  '],
    ['CR line ends and spaces before a break', 'one \r\ntwo\rthree'],
    ['invisible and control characters', 'zero\u200Bwidth\u2060joiner\u0007bell'],
    ['a decomposed accent', 'cafe\u0301'],
  ])('leaves nothing for the audit to flag in a text with %s', (_, text) => {
    // Prepare
    const before = whitespaceIssue(text);

    // Act
    const normalized = normalizeText(text);

    // Assess
    expect(before).toBeDefined();
    expect(whitespaceIssue(normalized)).toBeUndefined();
  });

  it('keeps indentation, emoji joiners and NUL bytes, which split rejects on its own', () => {
    // Prepare
    const text = 'list:\n    item 👩\u200D💻\u0000';

    // Act
    const normalized = normalizeText(text);

    // Assess
    expect(normalized).toBe(text);
  });
});
