/**
 * Which iptables the node uses. Rules written with the other backend would be
 * invisible to (and ordered independently of) everything else on the node, so
 * we follow the node, the way kube-proxy's iptables-wrapper does: the backend
 * that already holds rules wins; with none anywhere, the default `iptables`.
 */
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { runCommand } from './command.js';
import type { FamilyName } from '../core/address.js';

export type BackendMode = 'nft' | 'legacy';

export interface FamilyBinaries {
  readonly iptables: string;
  readonly save: string;
  readonly restore: string;
}

export interface Backend {
  readonly mode: BackendMode;
  /** `iptables --version` of the chosen binary, for the log. */
  readonly version: string;
  /** Why this backend was chosen, for the log. */
  readonly reason: string;
  readonly ipv4: FamilyBinaries;
  readonly ipv6: FamilyBinaries;
}

const COMMAND_TIMEOUT_MS = 10_000;

/** The full path of `name` on PATH (plus the sbin directories a non-login shell may lack), or null. */
export async function findBinary(name: string): Promise<string | null> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

async function binaries(suffix: '' | '-nft' | '-legacy'): Promise<{ ipv4: FamilyBinaries; ipv6: FamilyBinaries } | null> {
  const names = {
    ipv4: { iptables: `iptables${suffix}`, save: `iptables${suffix}-save`, restore: `iptables${suffix}-restore` },
    ipv6: { iptables: `ip6tables${suffix}`, save: `ip6tables${suffix}-save`, restore: `ip6tables${suffix}-restore` },
  };
  const out: Record<FamilyName, Record<keyof FamilyBinaries, string>> = {
    ipv4: { iptables: '', save: '', restore: '' },
    ipv6: { iptables: '', save: '', restore: '' },
  };
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const role of ['iptables', 'save', 'restore'] as const) {
      const found = await findBinary(names[family][role]);
      // IPv6 binaries are optional; an IPv4 set must be complete.
      if (found === null && family === 'ipv4') return null;
      out[family][role] = found ?? names[family][role];
    }
  }
  return out;
}

async function countRules(save: string): Promise<number> {
  const r = await runCommand(save, [], { timeoutMs: COMMAND_TIMEOUT_MS });
  if (r.code !== 0) return 0;
  return r.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
}

function modeOfVersion(version: string): BackendMode {
  return /legacy/i.test(version) ? 'legacy' : /nf_tables/i.test(version) ? 'nft' : 'legacy';
}

/** Detects the backend; null when there is no usable iptables at all. */
export async function detectBackend(): Promise<Backend | null> {
  const plain = await binaries('');
  const nft = await binaries('-nft');
  const legacy = await binaries('-legacy');
  const versionOf = async (b: FamilyBinaries): Promise<string> => {
    const r = await runCommand(b.iptables, ['--version'], { timeoutMs: COMMAND_TIMEOUT_MS });
    return r.stdout.trim() || r.stderr.trim();
  };
  if (nft !== null && legacy !== null) {
    const counts = {
      nft: (await countRules(nft.ipv4.save)) + (await countRules(nft.ipv6.save)),
      legacy: (await countRules(legacy.ipv4.save)) + (await countRules(legacy.ipv6.save)),
    };
    if (counts.nft !== counts.legacy && (counts.nft > 0 || counts.legacy > 0)) {
      const mode: BackendMode = counts.legacy > counts.nft ? 'legacy' : 'nft';
      const chosen = mode === 'nft' ? nft : legacy;
      return {
        mode,
        version: await versionOf(chosen.ipv4),
        reason: `it holds more rules (nft ${counts.nft}, legacy ${counts.legacy})`,
        ...chosen,
      };
    }
  }
  if (plain !== null) {
    const version = await versionOf(plain.ipv4);
    return { mode: modeOfVersion(version), version, reason: 'no rules in either backend; the default iptables', ...plain };
  }
  const only = nft ?? legacy;
  if (only === null) return null;
  const version = await versionOf(only.ipv4);
  return { mode: nft !== null ? 'nft' : 'legacy', version, reason: 'the only one installed', ...only };
}

/**
 * True when the comment match works. `-C` of a rule that cannot exist is
 * side-effect free: exit 1 means "no such rule" (the match loaded), exit 2
 * means the match itself is unknown.
 */
export async function detectCommentSupport(b: FamilyBinaries): Promise<boolean> {
  const r = await runCommand(
    b.iptables,
    ['-w', '5', '-t', 'filter', '-C', 'INPUT', '-m', 'comment', '--comment', 'kup-probe', '-j', 'ACCEPT'],
    { timeoutMs: COMMAND_TIMEOUT_MS },
  );
  return r.code === 0 || r.code === 1;
}

/** True when this family's iptables can list the nat table (IPv6 may be absent or disabled). */
export async function familyUsable(b: FamilyBinaries): Promise<boolean> {
  const r = await runCommand(b.iptables, ['-w', '5', '-t', 'nat', '-S', 'OUTPUT'], { timeoutMs: COMMAND_TIMEOUT_MS });
  return r.code === 0;
}

/**
 * Why rules cannot be used here, in one line, or null when they can: `kup run`
 * prints it and carries on without rules.
 */
export async function iptablesUnavailableReason(): Promise<string | null> {
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) return `iptables rules need root (running as uid ${uid}); running without rules`;
  const backend = await detectBackend();
  if (backend === null) return 'no iptables binary found (install iptables); running without rules';
  if (!(await familyUsable(backend.ipv4))) {
    return `${backend.ipv4.iptables} cannot read the nat table (missing kernel support or capability); running without rules`;
  }
  return null;
}
