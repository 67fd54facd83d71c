/**
 * Errors a user can cause or fix (a bad flag, an unreadable file, a port
 * range too small, iptables refusing a rule) carry a stable code so the CLI
 * prints one line instead of a stack trace, logs carry the code, and tests
 * assert on the code rather than on wording. One catalogue, as fastify's
 * lib/errors.js: every code is thrown somewhere in lib/, and README's
 * "Error codes" table says what each means and what to do
 * (spec/error-codes.test.ts keeps the three in step).
 */
export const KUP_ERRORS = {
  KUP_BAD_FLAG: 'a command-line flag or argument has a value kup cannot use',
  KUP_BAD_FILE: 'a file kup was pointed at (source YAML, kubeconfig) cannot be read or parsed',
  KUP_BAD_CONFIG: 'the --config KubeProxyConfiguration has the wrong kind, a mode other than userspace, or a value kup cannot use',
  KUP_NO_SOURCE: 'there is nothing to follow: no usable kubeconfig or in-cluster API server',
  KUP_LISTEN_FAILED: 'a server (health, metrics, demo backend) cannot listen on its address',
  KUP_PORT_RANGE_EXHAUSTED: 'every port of --proxy-port-range is taken, so a service port gets no listener',
  KUP_FD_EXHAUSTED: "the data plane's share of the open-files limit is used up, so a listener cannot be opened",
  KUP_IPTABLES_UNAVAILABLE: 'iptables is missing or cannot read the nat table, so rules cannot be installed',
  KUP_IPTABLES: 'an iptables command failed (its stderr is in the message); the syncer retries',
  KUP_SERVER: 'the kup asked with --server did not answer a /status document',
  KUP_STATE_DIR: '--state-dir cannot be created or its lock socket cannot be bound',
  KUP_NATIVE_RELAY: '--relay native was asked for but the native relay addon cannot be loaded (not built, or not Linux)',
  KUP_ALREADY_RUNNING: 'another kup holds the lock in the same --state-dir; this one exits before touching iptables',
} as const satisfies Record<`KUP_${string}`, string>;

export type KupErrorCode = keyof typeof KUP_ERRORS;

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

/** The KupError code of anything thrown, for a log line's `code` field; undefined for other errors. */
export function errorCode(err: unknown): KupErrorCode | undefined {
  return isKupError(err) ? err.code : undefined;
}
