/**
 * Kubernetes label and field selectors as the API server evaluates them, for
 * the API server double. Label selectors: `key`, `!key`, `key=v`, `key==v`,
 * `key!=v`, `key in (a,b)`, `key notin (a,b)`, comma meaning AND. Field
 * selectors: `path=v`, `path==v`, `path!=v`, comma meaning AND.
 */

export type Labels = Readonly<Record<string, string>>;

type LabelRequirement =
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: readonly string[] };

export class SelectorSyntaxError extends Error {}

/** Splits on commas that are not inside parentheses. */
function splitTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of selector) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      terms.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  terms.push(current);
  return terms.map((t) => t.trim()).filter((t) => t.length > 0);
}

export function parseLabelSelector(selector: string): readonly LabelRequirement[] {
  return splitTerms(selector).map((term): LabelRequirement => {
    const set = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
    if (set) {
      const values = set[3]!.split(',').map((v) => v.trim());
      return { op: set[2] === 'in' ? 'in' : 'notin', key: set[1]!, values };
    }
    const neq = /^([^=!\s]+)\s*!=\s*(\S*)$/.exec(term);
    if (neq) return { op: 'neq', key: neq[1]!, value: neq[2]! };
    const eq = /^([^=!\s]+)\s*==?\s*(\S*)$/.exec(term);
    if (eq) return { op: 'eq', key: eq[1]!, value: eq[2]! };
    const not = /^!\s*([^=!\s]+)$/.exec(term);
    if (not) return { op: 'notexists', key: not[1]! };
    if (/^[^=!\s()]+$/.test(term)) return { op: 'exists', key: term };
    throw new SelectorSyntaxError(`unable to parse requirement: ${term}`);
  });
}

export function labelsMatch(requirements: readonly LabelRequirement[], labels: Labels): boolean {
  return requirements.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const value = labels[r.key];
    switch (r.op) {
      case 'exists':
        return has;
      case 'notexists':
        return !has;
      case 'eq':
        return has && value === r.value;
      case 'neq':
        return !has || value !== r.value;
      case 'in':
        return has && r.values.includes(value!);
      case 'notin':
        return !has || !r.values.includes(value!);
    }
  });
}

export interface FieldRequirement {
  readonly field: string;
  readonly op: 'eq' | 'neq';
  readonly value: string;
}

export function parseFieldSelector(selector: string, supported: readonly string[]): readonly FieldRequirement[] {
  return splitTerms(selector).map((term) => {
    const m = /^([^=!\s]+)\s*(!=|==|=)\s*(.*)$/.exec(term);
    if (!m) throw new SelectorSyntaxError(`invalid field selector: ${term}`);
    const field = m[1]!;
    if (!supported.includes(field)) throw new SelectorSyntaxError(`field label not supported: ${field}`);
    return { field, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]! };
  });
}

/** Reads a dotted path from plain JSON; absent fields read as "" as the API server's field sets do. */
export function fieldValue(obj: unknown, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'string' || typeof cur === 'number' || typeof cur === 'boolean' ? String(cur) : JSON.stringify(cur);
}

export function fieldsMatch(requirements: readonly FieldRequirement[], obj: unknown): boolean {
  return requirements.every((r) => (fieldValue(obj, r.field) === r.value) === (r.op === 'eq'));
}
