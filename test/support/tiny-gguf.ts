import { writeFile } from 'node:fs/promises';

const ALIGNMENT = 32;
enum ValueType {
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  String = 8,
  Array = 9,
}
enum TokenType {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  Byte = 6,
}
type Value =
  | { type: ValueType.Uint32 | ValueType.Float32; value: number }
  | { type: ValueType.String; value: string }
  | { type: ValueType.Array; of: ValueType.String; values: string[] }
  | { type: ValueType.Array; of: ValueType.Float32 | ValueType.Int32; values: number[] };

/** The vocabulary: control tokens, 256 byte-fallback tokens, printable ASCII alone and after `▁`. */
function vocabulary(): { tokens: string[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TokenType.Unknown, TokenType.Control, TokenType.Control];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TokenType.Byte);
  }
  const printable = Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i));
  for (const piece of ['▁', ...printable, ...printable.map((c) => `▁${c}`), '{"', '":', '",', '"}']) {
    tokens.push(piece);
    types.push(TokenType.Normal);
  }
  return { tokens, types };
}

/** mulberry32: a small deterministic PRNG, so the same seed gives the same weights. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Writes a random-weight tiny llama model as a GGUF v3 file (F32 tensors, SentencePiece-style vocabulary
 * with byte fallback), small enough for a unit test yet loadable by llama.cpp and able to tokenize any text.
 */
export async function writeTinyGguf(
  path: string,
  options: { seed?: number; layers?: number; embd?: number; chatTemplate?: string } = {},
): Promise<void> {
  const { seed = 1, layers = 2, embd = 32, chatTemplate } = options;
  const heads = 4;
  const ff = embd * 2;
  const { tokens, types } = vocabulary();
  const metadata: Record<string, Value> = {
    'general.architecture': { type: ValueType.String, value: 'llama' },
    'general.name': { type: ValueType.String, value: 'tiny-random-llama' },
    'llama.context_length': { type: ValueType.Uint32, value: 2048 },
    'llama.embedding_length': { type: ValueType.Uint32, value: embd },
    'llama.block_count': { type: ValueType.Uint32, value: layers },
    'llama.feed_forward_length': { type: ValueType.Uint32, value: ff },
    'llama.attention.head_count': { type: ValueType.Uint32, value: heads },
    'llama.attention.head_count_kv': { type: ValueType.Uint32, value: heads },
    'llama.rope.dimension_count': { type: ValueType.Uint32, value: embd / heads },
    'llama.attention.layer_norm_rms_epsilon': { type: ValueType.Float32, value: 1e-5 },
    'tokenizer.ggml.model': { type: ValueType.String, value: 'llama' },
    'tokenizer.ggml.tokens': { type: ValueType.Array, of: ValueType.String, values: tokens },
    'tokenizer.ggml.scores': {
      type: ValueType.Array,
      of: ValueType.Float32,
      values: tokens.map((t) => -t.length),
    },
    'tokenizer.ggml.token_type': { type: ValueType.Array, of: ValueType.Int32, values: types },
    'tokenizer.ggml.unknown_token_id': { type: ValueType.Uint32, value: 0 },
    'tokenizer.ggml.bos_token_id': { type: ValueType.Uint32, value: 1 },
    'tokenizer.ggml.eos_token_id': { type: ValueType.Uint32, value: 2 },
    ...(chatTemplate && { 'tokenizer.chat_template': { type: ValueType.String, value: chatTemplate } }),
  };
  // Dimensions are listed fastest-first, as ggml's ne[0], ne[1]; norms start at 1, the rest is random.
  const tensors: [name: string, dims: number[]][] = [
    ['token_embd.weight', [embd, tokens.length]],
    ['output_norm.weight', [embd]],
    ['output.weight', [embd, tokens.length]],
  ];
  for (let i = 0; i < layers; i++) {
    const blk = `blk.${i}`;
    tensors.push([`${blk}.attn_norm.weight`, [embd]], [`${blk}.ffn_norm.weight`, [embd]]);
    for (const name of ['attn_q', 'attn_k', 'attn_v', 'attn_output'])
      tensors.push([`${blk}.${name}.weight`, [embd, embd]]);
    tensors.push(
      [`${blk}.ffn_gate.weight`, [embd, ff]],
      [`${blk}.ffn_up.weight`, [embd, ff]],
      [`${blk}.ffn_down.weight`, [ff, embd]],
    );
  }

  const parts: Buffer[] = [];
  let length = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    length += b.length;
  };
  const u32 = (n: number) => push(Buffer.from(new Uint32Array([n]).buffer));
  const u64 = (n: number) => push(Buffer.from(new BigUint64Array([BigInt(n)]).buffer));
  const str = (s: string) => {
    const bytes = Buffer.from(s, 'utf8');
    u64(bytes.length);
    push(bytes);
  };
  const pad = () => push(Buffer.alloc((ALIGNMENT - (length % ALIGNMENT)) % ALIGNMENT));
  const scalar = (type: ValueType, v: number | string) => {
    if (type === ValueType.String) str(String(v));
    else if (type === ValueType.Float32) push(Buffer.from(new Float32Array([+v]).buffer));
    else if (type === ValueType.Int32) push(Buffer.from(new Int32Array([+v]).buffer));
    else u32(+v);
  };

  push(Buffer.from('GGUF', 'ascii'));
  u32(3);
  u64(tensors.length);
  u64(Object.keys(metadata).length);
  for (const [key, v] of Object.entries(metadata)) {
    str(key);
    u32(v.type);
    if (v.type === ValueType.Array) {
      u32(v.of);
      u64(v.values.length);
      for (const item of v.values) scalar(v.of, item);
    } else scalar(v.type, v.value);
  }
  const random = prng(seed);
  const data: Float32Array[] = [];
  let offset = 0;
  for (const [name, dims] of tensors) {
    const count = dims.reduce((a, b) => a * b, 1);
    const scale = 1 / Math.sqrt(dims[0] ?? 1);
    data.push(
      Float32Array.from({ length: count }, () =>
        name.endsWith('norm.weight') ? 1 : (random() * 2 - 1) * scale,
      ),
    );
    str(name);
    u32(dims.length);
    for (const d of dims) u64(d);
    u32(0); // GGML_TYPE_F32
    u64(offset);
    offset += Math.ceil((count * 4) / ALIGNMENT) * ALIGNMENT;
  }
  pad();
  for (const tensor of data) {
    push(Buffer.from(tensor.buffer));
    pad();
  }
  await writeFile(path, Buffer.concat(parts, length));
}
