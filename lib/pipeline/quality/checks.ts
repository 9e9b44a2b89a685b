import { CONTROL, sameText, ZERO_WIDTH } from '../records.js';
import { textSimilarity } from './near-duplicates.js';

/** The rules a per-text check can report, named as the audit names them. */
export type CheckRule =
  | 'spreadsheet-artifact'
  | 'whitespace'
  | 'too-short'
  | 'too-long'
  | 'fragment-instruction'
  | 'stock-refusal'
  | 'chosen-equals-rejected'
  | 'chosen-near-rejected';

/** Why a text fails a check: a stable machine name and a short human detail. */
export interface Finding {
  readonly rule: CheckRule;
  readonly detail: string;
}

/** Shortest and longest a text may be, in characters after trimming. */
export interface LengthBounds {
  readonly min: number;
  readonly max: number;
}

const SPREADSHEET_ERROR =
  /(?<![\p{L}\p{N}_#])#(?:NAME\?|VALUE!|REF!|DIV\/0!|N\/A|NULL!|NUM!|SPILL!|CALC!|ERROR!)(?![\p{L}\p{N}_])/u;

/**
 * An Excel or Google Sheets error value (`#NAME?`, `#VALUE!`, `#REF!`, `#DIV/0!`, `#N/A`, `#NULL!`,
 * `#NUM!`, `#SPILL!`, `#CALC!`, `#ERROR!`) standing as a token of its own anywhere in the text: the
 * cell went through a spreadsheet that read it as a formula. `#NAME` without its `?`, or `#N/Apple`,
 * is not one.
 */
export function spreadsheetArtifact(text: string): Finding | undefined {
  const match = SPREADSHEET_ERROR.exec(text);
  return match ? { rule: 'spreadsheet-artifact', detail: `holds ${match[0]}` } : undefined;
}

const codeOf = (char: string) =>
  `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * Whitespace the pipeline normalizes away, so data that still has it did not go through that step:
 * leading or trailing whitespace, a CR line end, spaces or tabs before a line break, a run of two or
 * more spaces or tabs between words (indentation at the start of a line is layout, not a defect),
 * text not in Unicode NFC, invisible zero-width characters, and control characters other than a
 * newline and a tab.
 * Reports the first problem found.
 */
export function whitespaceIssue(text: string): Finding | undefined {
  const issue = (detail: string): Finding => ({ rule: 'whitespace', detail });
  if (/^\s/u.test(text)) return issue('leading whitespace');
  if (/\s$/u.test(text)) return issue('trailing whitespace');
  if (text.includes('\r')) return issue('CR line ends');
  if (/[ \t]\n/.test(text)) return issue('spaces before a line break');
  if (/\S[ \t]{2,}\S/u.test(text)) return issue('a run of spaces or tabs inside');
  const zeroWidth = ZERO_WIDTH.exec(text);
  if (zeroWidth) return issue(`zero-width character ${codeOf(zeroWidth[0])}`);
  const control = CONTROL.exec(text);
  if (control) return issue(`control character ${codeOf(control[0])}`);
  if (text.normalize('NFC') !== text) return issue('not in Unicode NFC');
  return undefined;
}

/** The length of a text in Unicode code points, so an emoji is one character. */
export function characterCount(text: string): number {
  let surrogates = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xdc00 && c <= 0xdfff) surrogates++;
  }
  return text.length - surrogates;
}

/** 'too-short' or 'too-long' when the trimmed text has fewer than `min` or more than `max` characters. */
export function lengthIssue(text: string, bounds: LengthBounds): Finding | undefined {
  const length = characterCount(text.trim());
  if (length < bounds.min)
    return { rule: 'too-short', detail: `${length} characters, at least ${bounds.min} expected` };
  if (length > bounds.max)
    return { rule: 'too-long', detail: `${length} characters, at most ${bounds.max} expected` };
  return undefined;
}

/** The words of a text: runs of non-space holding at least one letter or digit. */
const wordsOf = (text: string): string[] => text.split(/\s+/u).filter((w) => /[\p{L}\p{N}]/u.test(w));

/** A regular expression source for any of the phrases; a space in one stands for any run of whitespace. */
const anyOf = (...phrases: readonly string[]): string =>
  `(?:${phrases.map((p) => p.replaceAll(' ', '\\s+')).join('|')})`;

const CONTINUATION_WORD = anyOf('and', 'also', 'but', 'or', 'then', 'plus', 'now', 'again', 'additionally');
const CONTINUATION = new RegExp(`^${CONTINUATION_WORD}(?![\\p{L}\\p{N}'’-])`, 'iu');

/** Nouns for a text that "the <noun>" points at when nothing else names it. */
const TEXT_NOUNS = [
  ...['above', 'previous', 'preceding', 'same', 'following', 'text', 'passage', 'paragraph', 'sentence'],
  ...['article', 'story', 'poem', 'essay', 'email', 'message', 'letter', 'code', 'list', 'answer'],
  ...['response', 'summary', 'document', 'post', 'tweet', 'comment', 'quote', 'statement'],
];
/** Words after "that" that show it is the object ("translate that into French"), not a conjunction. */
const AFTER_THAT = [
  ...['into', 'to', 'in', 'for', 'as', 'so', 'with', 'from', 'more', 'again', 'please', 'one', 'bit', 'up'],
  ...['down', 'text', 'sentence', 'paragraph', 'passage', 'story', 'poem'],
];
/** Words after "the <noun>" that name it: "Summarize the story of Cinderella" is self-contained. */
const NAMING = [
  'of',
  'about',
  'on',
  'from',
  'by',
  'called',
  'titled',
  'entitled',
  'named',
  'that',
  'which',
  'who',
  'where',
];
// The object of an editing verb when it points at text the instruction does not hold. `that` only
// counts when it ends the clause, so "Explain that vaccines are tested" is not read as deictic.
const POINTER = anyOf(
  `${anyOf('it', 'this', 'these', 'those', 'them')}(?![\\p{L}\\p{N}-])`,
  `that(?=\\s*(?:[.!?,;]|$|\\s+${anyOf(...AFTER_THAT)}\\b))`,
  `the ${anyOf(...TEXT_NOUNS)}(?![\\p{L}\\p{N}-])(?!\\s+${anyOf(...NAMING)}\\b)`,
);
const EDIT_VERB = anyOf(
  ...['rewrite', 're-write', 'rephrase', 'reword', 'summari[sz]e', 'shorten', 'lengthen', 'expand( on)?'],
  ...['elaborate( on)?', 'simplify', 'translate', 'paraphrase', 'edit', 'proofread', 'fix', 'improve'],
  ...['polish', 'revise', 'redo', 'reformat', 'format', 'condense', 'explain', 'continue', 'finish'],
  ...['complete', 'correct', 'check', 'review', 'make', 'keep', 'turn', 'change', 'convert', 'repeat'],
  ...['read', 'analy[sz]e', 'write', 'say', 'put', 'give'],
);
const PRONOUN = anyOf('it', 'this', 'that', 'they', 'these', 'those');
const GO_ON = anyOf('continue', 'go on', 'keep going', 'tell me more', 'more');
const WH_WORD = anyOf('what', 'why', 'how', 'who', 'where', 'when');
const EARLIER_THING = anyOf(
  ...['answer', 'response', 'message', 'text', 'one', 'paragraph', 'sentence', 'example', 'prompt'],
  ...['question', 'version'],
);

/** Phrases that lean on an earlier turn or on text that is not there. */
const CONTEXT_DEPENDENT: readonly RegExp[] = [
  // Only as the opening request: in "Write a haiku and make it rhyme" or "Write a story. Make it
  // scary." the pointer's referent comes earlier in the instruction.
  `^(?:${anyOf('please', 'can you', 'could you', 'would you', 'now')}\\s+)*${EDIT_VERB}\\s+${POINTER}`,
  `\\b${anyOf('do', 'try')} ${anyOf('the same', 'it again', 'that again', 'this again', 'again')}\\b`,
  '\\bagain\\s*[.!?]*$',
  `\\bsame ${anyOf('thing', 'again', 'as above', 'as before')}\\b`,
  `\\b${anyOf('the above', 'as above', 'like before', 'as before')}\\b`,
  `\\b${anyOf('previous', 'preceding')} ${EARLIER_THING}\\b`,
  `\\b${anyOf('another', 'one more')} ${anyOf('one', 'time', 'example', 'version')}\\b`,
  `^(?:please\\s+)?${GO_ON}(?:\\s+please)?\\s*[.!?]*$`,
  `^${WH_WORD}(?:\\s+${anyOf('is', 'was', 'are', 'were', 'does', 'did', 'do')})?\\s+${PRONOUN}\\s*[.!?]*$`,
].map((source) => new RegExp(source, 'iu'));

/** A quoted span, or a colon or line break that introduces the text the instruction is about. */
const CARRIES_CONTENT = /[:\n"“”«»]|(?:^|\s)'[^']+'(?:\s|[.!?,]|$)/u;

/**
 * An instruction that cannot stand alone: the released data holds instructions such as " Make it
 * short.", written as if an earlier turn existed. Heuristics, in order:
 * - fewer than 3 words ("Continue.", "Meow");
 * - it opens with a continuation word (and, also, but, or, then, plus, now, again, additionally);
 * - it has at most 8 words, leans on text it does not hold ("make it shorter", "rewrite this", "do the
 *   same", "continue", "translate that", "the above", "what is it?"), and carries no content of its
 *   own: no colon, quote or line break introducing the text to work on.
 * Self-contained requests pass: "Write a poem about the sea.", "Tell me a joke.", "Rewrite this
 * sentence in passive voice: The cat ate the fish."
 */
export function fragmentInstruction(text: string): Finding | undefined {
  const trimmed = text.trim();
  const words = wordsOf(trimmed);
  const fragment = (detail: string): Finding => ({ rule: 'fragment-instruction', detail });
  if (words.length < 3) return fragment(words.length === 1 ? 'only 1 word' : `only ${words.length} words`);
  const opener = CONTINUATION.exec(trimmed);
  if (opener) return fragment(`opens with "${opener[0]}", as if continuing`);
  if (words.length > 8 || CARRIES_CONTENT.test(trimmed)) return undefined;
  for (const pattern of CONTEXT_DEPENDENT) {
    const match = pattern.exec(trimmed);
    if (match) return fragment(`"${match[0].trim()}" refers to something it does not hold`);
  }
  return undefined;
}

/** A straight or a typographic apostrophe. */
const APOSTROPHE = "['’]";
/** What a refusal declines to do. */
const REFUSED = anyOf(
  ...['assist', 'help', 'comply', 'provide', 'fulfil', 'fulfill', 'support', 'engage', 'continue', 'create'],
  ...['generate', 'write', 'answer', 'respond', 'complete', 'participate', 'produce', 'share', 'discuss'],
  ...['do that', 'do this', 'do it', 'do so', 'give', 'offer', 'promote', 'condone', 'encourage', 'endorse'],
  ...['process', 'perform', 'accommodate', 'facilitate', 'entertain', 'proceed', 'contribute', 'repeat'],
  ...['rephrase', 'rewrite', 'summari[sz]e'],
);
/** After "I" or "we": will not, cannot, or is not able to. */
const WILL_NOT = anyOf(
  `(?:\\s+${anyOf('really', 'simply', 'just', 'truly')})?\\s+` +
    anyOf(`can${APOSTROPHE}?t`, 'cannot', 'can not', `won${APOSTROPHE}t`, 'will not', 'must not') +
    `(?:\\s+be\\s+able\\s+to)?`,
  `\\s+${anyOf(`shouldn${APOSTROPHE}t`, 'should not', 'do not', `don${APOSTROPHE}t`)}`,
  `${anyOf('\\s+am', `${APOSTROPHE}m`, '\\s+are', `${APOSTROPHE}re`)}\\s+` +
    `${anyOf('not able', 'not going', 'not allowed', 'not permitted', 'not comfortable', 'unable')}\\s+to`,
  `\\s+${anyOf('do not', `don${APOSTROPHE}t`)} have the ${anyOf('ability', 'capacity', 'means')} to`,
  `${anyOf('\\s+am', `${APOSTROPHE}m`)} not in a position to`,
);
const SPEAKER = anyOf('i', 'we');
/** The core of a refusal: the speaker will not or cannot do what was asked. */
const REFUSAL = new RegExp(
  [
    `\\b${SPEAKER}${WILL_NOT}\\s+(?:\\p{L}+ly\\s+)?${REFUSED}\\b`,
    `\\b${SPEAKER}\\s+${anyOf('must ', 'have to ', 'need to ')}?(?:respectfully\\s+)?` +
      `${anyOf('decline', 'refuse')}\\b`,
    `\\b${SPEAKER}${WILL_NOT}\\s*[.!]*$`,
    `\\bnot ${anyOf('something', 'a request', 'a topic')}\\s+(?:that\\s+)?${SPEAKER}\\s+` +
      `${anyOf('can', 'could', 'will', 'am able to')}\\b`,
    `^(?:sorry[,.!]?\\s+)?${anyOf('unable', 'not able')}\\s+to\\s+` +
      `${anyOf('assist', 'help', 'comply', 'fulfil', 'fulfill', 'provide')}\\b`,
  ].join('|'),
  'iu',
);
const ANYTHING_ELSE = anyOf(
  ...['anything else', 'something else', 'any other questions?', 'any other topics?'],
  'any other requests?',
);
/** A closing line every canned refusal carries; it offers nothing in particular. */
// Anchored at sentence starts: the same matches (a leftmost match always starts at one), without
// rescanning each sentence from every character, which made it the hottest line of a run.
const GENERIC_CLOSER = new RegExp(`(?<=^|[.!?])[^.!?]*\\b${ANYTHING_ELSE}\\b[^.!?]*[.!?]?`, 'giu');
const OFFERED = anyOf(
  ...['help', 'assist', 'offer', 'suggest', 'provide', 'share', 'explain', 'recommend', 'talk'],
  'discuss',
);
const MODAL = anyOf(
  ...[' can', ' could', ' would', ' am', ' will'],
  ...[`${APOSTROPHE}d`, `${APOSTROPHE}m`, `${APOSTROPHE}ll`],
);
const SELF_HELP = anyOf('try', 'want', 'look', 'reach', 'talk', 'contact', 'call', 'visit', 'find', 'read');
const SUPPORT = anyOf(
  ...['resources?', 'hotlines?', 'helplines?', 'crisis', 'lifeline', 'samaritans', 'counsell?or'],
  ...['therapist', 'professional', '988', '911', 'reach out', 'talk to', 'speak to', 'speak with', 'contact'],
);
/**
 * Signs that a refusal offers something: an alternative, an offer to help, resources or a hotline.
 * A refusal with one of these declines the harmful part and still serves the user.
 */
const OFFERS_SOMETHING = new RegExp(
  [
    '\\binstead\\b',
    `\\b${SPEAKER}${MODAL}(?:\\s+(?:be\\s+)?${anyOf('happy', 'glad', 'more than happy')}\\s+to)?` +
      `\\s+${OFFERED}\\b`,
    `\\bif you(?:${APOSTROPHE}d|\\s+would) like\\b`,
    `\\bif you ${anyOf('want', 'wish', 'are interested', 'need')}\\b`,
    `\\bhere ${anyOf('are', 'is')}\\b`,
    '\\bconsider\\b',
    `\\byou ${anyOf('could', 'might', 'may', 'can')} ${SELF_HELP}\\b`,
    `\\b${SUPPORT}\\b`,
  ].join('|'),
  'iu',
);

/** Refusals are short: a longer response explains itself, whatever words it opens with. */
const STOCK_REFUSAL_MAX_WORDS = 40;
const SENTENCE_END = /[.!?]+(?:\s|$)/gu;
const I_AM_SORRY = `i(?:${APOSTROPHE}m|\\s+am)\\s+(?:\\p{L}+\\s+)?sorry`;
const APOLOGY = new RegExp(
  `^${anyOf(I_AM_SORRY, 'sorry', 'apologies', 'my apologies', 'i apologi[sz]e', 'unfortunately')}\\b`,
  'iu',
);

/** Where the opening of a response ends: its first sentence, or its second when the first only apologizes. */
function openingEnd(text: string): number {
  SENTENCE_END.lastIndex = 0;
  const first = SENTENCE_END.exec(text);
  if (!first) return text.length;
  if (!(first.index < 60 && APOLOGY.test(text))) return first.index;
  const second = SENTENCE_END.exec(text);
  return second ? second.index : text.length;
}

/**
 * A short canned refusal with nothing else in it, such as "Sorry, but I can't assist with that.",
 * "I'm unable to comply." or "As an AI, I cannot do that.": the response refuses in its first sentence
 * (or its second, after a sentence of apology), has at most 40 words, and offers nothing: no
 * alternative, no offer of help, no resources or hotline ("instead", "I can help you", "if you'd like",
 * "here are", "consider", "a professional", "988"). A refusal that says why but offers nothing still
 * counts, as does one that ends with a generic "anything else I can help with?": the data teaches a
 * model to refuse, not to help. The released Safer-Instruct data is mostly such responses.
 */
export function stockRefusal(text: string): Finding | undefined {
  const trimmed = text.trim();
  const match = REFUSAL.exec(trimmed);
  if (!match || match.index > openingEnd(trimmed)) return undefined;
  const words = wordsOf(trimmed).length;
  // The refusal itself ("not something I can help with") is no offer, nor is a generic closing line.
  const rest = `${trimmed.slice(0, match.index)} ${trimmed.slice(match.index + match[0].length)}`;
  if (words > STOCK_REFUSAL_MAX_WORDS || OFFERS_SOMETHING.test(rest.replace(GENERIC_CLOSER, '')))
    return undefined;
  return { rule: 'stock-refusal', detail: `a ${words}-word refusal that offers nothing` };
}

/** True when a text is empty after trimming, or holds only punctuation and symbols. */
export const isBlank = (text: string): boolean => /^[\p{P}\p{S}\p{Z}\s]*$/u.test(text);

/**
 * 'chosen-equals-rejected' when the two sides are the same text once case and whitespace are ignored,
 * 'chosen-near-rejected' when their character-shingle sets have a Jaccard similarity of at least
 * `threshold`. Either way the pair teaches nothing.
 */
export function chosenLikeRejected(
  chosen: string,
  rejected: string,
  threshold: number,
  shingleSize?: number,
): Finding | undefined {
  if (sameText(chosen, rejected))
    return { rule: 'chosen-equals-rejected', detail: 'chosen and rejected are the same text' };
  const similarity = textSimilarity(chosen, rejected, shingleSize);
  if (similarity >= threshold)
    return { rule: 'chosen-near-rejected', detail: `similarity ${similarity.toFixed(2)}` };
  return undefined;
}
