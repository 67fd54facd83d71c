/** The bytes the hand-over test's transfers carry: byte i is PATTERN[i % 251], so any loss or reordering shows. */
export const PATTERN_PERIOD = 251;

/** A chunk holding the pattern many times over, starting at offset 0 of the period. */
export function patternChunk(): Buffer {
  const b = Buffer.alloc(PATTERN_PERIOD * 261);
  for (let i = 0; i < b.length; i++) b[i] = ((i % PATTERN_PERIOD) * 7 + 3) & 0xff;
  return b;
}
