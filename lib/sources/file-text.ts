import { KupError } from '../core/errors.js';

/**
 * The text of a source file from its bytes. UTF-8 (with or without a BOM) and
 * UTF-16 with a BOM (what PowerShell's `>` writes) are decoded; anything else
 * is refused with one line rather than parsed into garbage that silently
 * means "no services".
 */
export function decodeFileText(bytes: Uint8Array, origin: string): string {
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return utf8(bytes.subarray(3), origin);
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return utf16(bytes.subarray(2), 'utf-16le', origin);
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return utf16(bytes.subarray(2), 'utf-16be', origin);
  return utf8(bytes, origin);
}

function utf8(bytes: Uint8Array, origin: string): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new KupError('KUP_BAD_FILE', `${origin}: not UTF-8 text (nor UTF-16 with a byte-order mark); save it as UTF-8`);
  }
  // Valid UTF-8 but full of NULs: UTF-16 without a byte-order mark.
  if (text.includes('\u0000')) {
    throw new KupError('KUP_BAD_FILE', `${origin}: contains NUL bytes (UTF-16 without a byte-order mark?); save it as UTF-8`);
  }
  return text;
}

function utf16(bytes: Uint8Array, encoding: 'utf-16le' | 'utf-16be', origin: string): string {
  try {
    return new TextDecoder(encoding, { fatal: true }).decode(bytes);
  } catch {
    throw new KupError(
      'KUP_BAD_FILE',
      `${origin}: starts with a ${encoding.toUpperCase()} byte-order mark but is not valid ${encoding.toUpperCase()}; save it as UTF-8`,
    );
  }
}
