// A closing tag inside the data would end the data block early; break it so it stays data.
const neutralize = (value: string) => value.replace(/<\/(\w+)>/g, '<\u200b/$1>');

/**
 * Fills `{{name}}` placeholders; values are neutralized so they cannot close their tags, unless the
 * template has no tags to protect and must match its training data byte for byte (`raw`).
 */
export function renderTemplate(
  text: string,
  values: Record<string, string>,
  options: { raw?: boolean } = {},
): string {
  return text.replace(/\{\{(\w+)\}\}/g, (whole, name: string) => {
    const value = values[name];
    return value === undefined ? whole : options.raw ? value : neutralize(value);
  });
}
