/**
 * Errors a user can cause (a bad flag, an unreadable file, a malformed object)
 * carry a stable code so the CLI can print one line instead of a stack trace,
 * and tests can assert on the code rather than on wording.
 */
export type KupErrorCode =
  | 'KUP_BAD_FLAG'
  | 'KUP_BAD_FILE'
  | 'KUP_BAD_OBJECT'
  | 'KUP_NO_SOURCE'
  | 'KUP_LISTEN_FAILED'
  | 'KUP_PORT_RANGE_EXHAUSTED'
  | 'KUP_IPTABLES'
  | 'KUP_SERVER'
  | 'KUP_STATE_DIR'
  | 'KUP_ALREADY_RUNNING';

export class KupError extends Error {
  readonly code: KupErrorCode;
  constructor(code: KupErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KupError';
    this.code = code;
  }
}

export function isKupError(err: unknown): err is KupError {
  return err instanceof KupError;
}

/** The message of anything thrown, for one-line logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
