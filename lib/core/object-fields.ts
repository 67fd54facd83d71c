/**
 * Objects come from files people write and from API servers we do not control:
 * nothing in them is trusted to have the type its schema promises. These
 * readers return a typed value or a fallback, never throw.
 */

export type Obj = Readonly<Record<string, unknown>>;

export function asObject(value: unknown): Obj | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Obj) : undefined;
}

export function asArray(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

export function asString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function asStringArray(value: unknown): string[] {
  return asArray(value).filter((v): v is string => typeof v === 'string');
}

export function asInt(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) ? value : undefined;
}

export function asBool(value: unknown): boolean | undefined {
  return typeof value === 'boolean' ? value : undefined;
}

/** Follows a path of object keys; undefined as soon as one is missing or not an object. */
export function field(root: unknown, ...path: string[]): unknown {
  let cur: unknown = root;
  for (const key of path) {
    const o = asObject(cur);
    if (o === undefined) return undefined;
    cur = o[key];
  }
  return cur;
}

/** For warnings: a name shortened and stripped of control characters so one log line stays one line. */
export function printable(value: unknown, max = 80): string {
  const s = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** A value as a warning shows it: strings quoted (and made printable), other values as JSON. */
export function quote(value: unknown): string {
  if (value === undefined) return '(none)';
  return typeof value === 'string' ? JSON.stringify(printable(value)) : printable(value);
}
