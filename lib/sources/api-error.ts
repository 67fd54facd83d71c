import { ApiException } from '@kubernetes/client-node';
import { errorMessage } from '../core/errors.js';

/**
 * One line for whatever the Kubernetes client threw: its API exceptions carry
 * multi-line messages with whole response bodies, and undici hides the real
 * network cause ("fetch failed") one level down.
 */
export function describeApiError(err: unknown): string {
  if (err instanceof ApiException) {
    const body: unknown = err.body;
    let reason = '';
    if (typeof body === 'string') {
      try {
        const parsed = JSON.parse(body) as { message?: unknown };
        reason = typeof parsed.message === 'string' ? parsed.message : body;
      } catch {
        reason = body;
      }
    } else if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') {
      reason = (body as { message: string }).message;
    }
    if (reason === '') reason = /Message: (.*)/.exec(err.message)?.[1] ?? '';
    return oneLine(`HTTP ${err.code}${reason ? ` ${reason}` : ''}`);
  }
  if (err instanceof Error) {
    const statusCode = (err as { statusCode?: unknown }).statusCode;
    if (typeof statusCode === 'number') return oneLine(`HTTP ${statusCode} ${err.message}`);
    const cause = (err as { cause?: unknown }).cause;
    if (err.message === 'fetch failed' && cause instanceof Error) return oneLine(describeCause(cause));
    if (err.name === 'TimeoutError') return 'no answer from the API server (timed out)';
    return oneLine(err.message);
  }
  return oneLine(errorMessage(err));
}

function describeCause(cause: Error): string {
  const code = (cause as { code?: unknown }).code;
  if (cause instanceof AggregateError && cause.errors.length > 0) {
    return cause.errors.map((e: unknown) => (e instanceof Error ? describeCause(e) : String(e))).join('; ');
  }
  return typeof code === 'string' && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
}

function oneLine(s: string): string {
  const line = s.replace(/\s*\n\s*/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}
