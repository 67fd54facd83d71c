import { readFileSync } from 'node:fs';
import { errorMessage } from '../core/errors.js';

/**
 * package.json as installed beside the compiled code: dist/lib/runtime/ is three
 * levels below it in a checkout, in `npm install`'s tree and in the image
 * (/app/package.json beside /app/dist). Read at run time rather than embedded,
 * so the version printed is the one of the package actually installed.
 */
const PACKAGE_JSON = new URL('../../../package.json', import.meta.url);

/** kup's version from its package.json; a short "unknown (...)" when that cannot be read, so only --version notices. */
export function kupVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(PACKAGE_JSON, 'utf8'));
    const version = typeof pkg === 'object' && pkg !== null ? (pkg as { version?: unknown }).version : undefined;
    return typeof version === 'string' ? version : 'unknown (package.json has no version)';
  } catch (err) {
    return `unknown (${errorMessage(err)})`;
  }
}
