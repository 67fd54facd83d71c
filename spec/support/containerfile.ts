/** The Containerfile read as data: its stages and their instructions. */
export interface Stage {
  readonly from: string;
  readonly name: string | null;
  /** Instructions after FROM, continuation lines joined, comments dropped. */
  readonly lines: string[];
}

export function parseStages(text: string): Stage[] {
  const out: Stage[] = [];
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const line of lines) {
    const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (m !== null) out.push({ from: m[1]!, name: m[2] ?? null, lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

export interface Copy {
  /** The stage copied from (`--from=`), or null for the build context. */
  readonly from: string | null;
  readonly sources: string[];
  readonly dest: string;
}

/** The COPY instructions of a stage, flags other than --from dropped. */
export function copies(stage: Stage): Copy[] {
  return stage.lines
    .filter((l) => /^COPY\s/i.test(l))
    .map((l) => {
      const words = l.split(/\s+/).slice(1);
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
      const paths = words.filter((w) => !w.startsWith('--'));
      return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
    });
}
