import { pino, type Logger } from 'pino';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * JSON lines on stderr (kube-proxy logs to stderr too), so stdout stays free
 * for what a command prints (`kup rules`, `kup status`). Synchronous writes:
 * lifecycle lines must not be lost when the process exits right after them.
 */
export function createLogger(level: LogLevel, destination: number | NodeJS.WritableStream = 2): Logger {
  const dest = typeof destination === 'number' ? pino.destination({ dest: destination, sync: true }) : destination;
  return pino(
    {
      level,
      // Not in `base`: pino appends a child's bindings after its parent's, so a
      // child naming its own component (iptables) printed "component" twice.
      // Lines from a logger that names none say "kup".
      base: undefined,
      mixin: (_obj, _level, logger) => (Object.hasOwn(logger.bindings(), 'component') ? {} : { component: 'kup' }),
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Never print credentials, whatever an object carries.
      redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'password', '*.password'], censor: '[redacted]' },
    },
    dest,
  );
}
