import { errorMessage, KupError } from '../core/errors.js';
import { STATUS_API_VERSION, type StatusDocument } from '../admin/status.js';

export const DEFAULT_STATUS_SERVER = 'http://127.0.0.1:10249';

/** Fetches /status from a running kup (its metrics server). */
export async function fetchStatus(server: string, clientIP = ''): Promise<StatusDocument> {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new KupError('KUP_BAD_FLAG', `--server: "${server}" is not a URL (for example ${DEFAULT_STATUS_SERVER})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new KupError('KUP_BAD_FLAG', `--server: "${server}" is not an http:// or https:// URL`);
  }
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/status`;
  if (clientIP !== '') url.searchParams.set('client', clientIP);
  let statusCode: number;
  let text: string;
  try {
    // undici is loaded here, not by every kup command (`kup run` never needs it).
    const { request } = await import('undici');
    const res = await request(url, { method: 'GET', headersTimeout: 10_000, bodyTimeout: 10_000 });
    statusCode = res.statusCode;
    text = await res.body.text();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ECONNREFUSED' ? 'connection refused' : errorMessage(err);
    throw new KupError(
      'KUP_SERVER',
      `cannot reach kup at ${url.origin}: ${why} (is \`kup run\` running, and is --metrics-bind-address this address?)`,
    );
  }
  if (statusCode !== 200) throw new KupError('KUP_SERVER', `${url.href} answered HTTP ${statusCode}: ${text.slice(0, 200).trim()}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new KupError('KUP_SERVER', `${url.href} did not answer JSON: is it a kup metrics server?`);
  }
  if (typeof doc !== 'object' || doc === null || (doc as { apiVersion?: unknown }).apiVersion !== STATUS_API_VERSION) {
    throw new KupError(
      'KUP_SERVER',
      `${url.href} did not answer a ${STATUS_API_VERSION} document: is it a kup metrics server of this version?`,
    );
  }
  return doc as StatusDocument;
}
