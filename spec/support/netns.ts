/**
 * Network namespaces for tests that need real packets and real iptables.
 * Everything a test does to the network happens inside namespaces created
 * here (names `kupt-<pid>-...`), joined by veth pairs with no route out; the
 * machine's own namespace is never given a rule, chain or address.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import type { Test } from 'tap';
import { runCommand, type CommandResult } from '../../lib/iptables/command.js';
import { findBinary } from '../../lib/iptables/backend.js';

export const NS_PREFIX = `kupt-${process.pid}-`;
/** The pinned Node (the system one may be older), as a path usable inside a namespace. */
export const NODE_BIN = resolve('node_modules/.bin/node');

let counter = 0;

/** Why namespace tests cannot run here, or null when they can. */
export async function netnsUnavailableReason(): Promise<string | null> {
  if ((process.getuid?.() ?? 0) !== 0) return 'needs root to create network namespaces';
  for (const bin of ['ip', 'iptables', 'iptables-save', 'iptables-restore']) {
    if ((await findBinary(bin)) === null) return `needs ${bin} (apt-get install -y iproute2 iptables)`;
  }
  const probe = `${NS_PREFIX}probe${counter++}`;
  const add = await runCommand('ip', ['netns', 'add', probe]);
  if (add.code !== 0) return `cannot create a network namespace: ${add.stderr.trim()}`;
  try {
    const ipt = await runCommand('ip', ['netns', 'exec', probe, 'iptables', '-w', '5', '-t', 'nat', '-S']);
    if (ipt.code !== 0) return `iptables does not work inside a namespace: ${ipt.stderr.trim()}`;
  } finally {
    await runCommand('ip', ['netns', 'del', probe]);
  }
  return null;
}

/**
 * Skips the whole file with the reason on a laptop, but fails it under
 * CI=true, so these tests can never silently stop running. Returns true when
 * the tests can run.
 */
export async function requireNetns(t: Test): Promise<boolean> {
  const reason = await netnsUnavailableReason();
  if (reason === null) return true;
  if (process.env.CI === 'true') t.fail(`CI=true but ${reason}`);
  else t.plan(0, reason);
  return false;
}

export class Netns {
  private readonly children = new Set<ChildProcess>();
  constructor(readonly name: string) {}

  /** Runs a command inside the namespace; rejects on a non-zero exit so setup errors are loud. */
  async run(cmd: string, args: readonly string[], input?: string): Promise<string> {
    const r = await this.exec(cmd, args, input);
    if (r.code !== 0) throw new Error(`[${this.name}] ${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  exec(cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
    return runCommand('ip', ['netns', 'exec', this.name, cmd, ...args], { input, timeoutMs: 30_000 });
  }

  /** Runs a compiled script (path relative to the repo) with the pinned Node inside the namespace, to completion. */
  node(script: string, args: readonly string[], timeoutMs = 30_000): Promise<CommandResult> {
    return runCommand('ip', ['netns', 'exec', this.name, NODE_BIN, '--disable-sigusr1', resolve(script), ...args], { timeoutMs });
  }

  /** Starts a long-running script inside the namespace; killed on teardown. */
  spawnNode(script: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, NODE_BIN, '--disable-sigusr1', resolve(script), ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** nat and filter as iptables-save prints them, without the counters and timestamps that change on their own. */
  async iptablesSave(family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<string> {
    const bin = family === 'ipv4' ? 'iptables-save' : 'ip6tables-save';
    const out: string[] = [];
    for (const table of ['nat', 'filter']) {
      const text = await this.run(bin, ['-t', table]);
      out.push(
        ...text
          .split('\n')
          .filter((l) => !l.startsWith('#') && l.trim() !== '')
          .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]')),
      );
    }
    return out.join('\n');
  }

  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    this.children.clear();
    await runCommand('ip', ['netns', 'del', this.name]);
  }
}

export interface Link {
  readonly a: Netns;
  readonly b: Netns;
  /** The interface names in a and in b. */
  readonly aIf: string;
  readonly bIf: string;
}

/** Creates a namespace (loopback up) that is deleted when the test ends, whatever happens. */
export async function createNetns(t: Test, role: string): Promise<Netns> {
  const ns = new Netns(`${NS_PREFIX}${counter++}-${role}`);
  const add = await runCommand('ip', ['netns', 'add', ns.name]);
  if (add.code !== 0) throw new Error(`ip netns add ${ns.name}: ${add.stderr.trim()}`);
  t.teardown(() => ns.destroy());
  await ns.run('ip', ['link', 'set', 'lo', 'up']);
  return ns;
}

/**
 * A veth pair between two namespaces with the given addresses (CIDR form, any
 * family; IPv6 without duplicate address detection so it is usable at once).
 * The pair is created inside `a` and one end moved to `b`: no interface ever
 * exists in the machine's own namespace.
 */
export async function link(a: Netns, aAddrs: readonly string[], b: Netns, bAddrs: readonly string[]): Promise<Link> {
  const id = `${process.pid % 100000}${counter++}`;
  const aIf = `kva${id}`.slice(0, 15);
  const bIf = `kvb${id}`.slice(0, 15);
  await a.run('ip', ['link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name]);
  for (const [ns, ifname, addrs] of [
    [a, aIf, aAddrs],
    [b, bIf, bAddrs],
  ] as const) {
    for (const addr of addrs) {
      await ns.run('ip', ['addr', 'add', addr, 'dev', ifname, ...(addr.includes(':') ? ['nodad'] : [])]);
    }
    await ns.run('ip', ['link', 'set', ifname, 'up']);
  }
  // Carrier comes up asynchronously (the kernel's linkwatch may wait up to a
  // second); until then the interface is not RUNNING and is missing from
  // os.networkInterfaces().
  for (const [ns, ifname] of [
    [a, aIf],
    [b, bIf],
  ] as const) {
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      up = / state UP /.test(await ns.run('ip', ['link', 'show', ifname]));
      if (!up) await new Promise((r) => setTimeout(r, 100));
    }
    if (!up) throw new Error(`${ifname} in ${ns.name} did not come up`);
  }
  return { a, b, aIf, bIf };
}

/** Deletes namespaces left by earlier runs whose process is gone (a crash skips teardown). */
export async function sweepLeftovers(): Promise<void> {
  const list = await runCommand('ip', ['netns', 'list']);
  for (const line of list.stdout.split('\n')) {
    const m = /^(kupt-(\d+)-\S*)/.exec(line.trim());
    if (m === null || Number(m[2]) === process.pid) continue;
    let alive = true;
    try {
      process.kill(Number(m[2]), 0);
    } catch {
      alive = false;
    }
    if (!alive) await runCommand('ip', ['netns', 'del', m[1]!]);
  }
}

/**
 * The cluster the kup-in-a-namespace tests serve: ClusterIP 10.96.0.10:80 to
 * a backend on the node namespace's 127.0.0.1:8080.
 */
export const WEB_CLUSTER_YAML = `kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: default }
    spec: { clusterIP: 10.96.0.10, ports: [{ name: http, protocol: TCP, port: 80 }] }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: 8080 }]
    endpoints: [{ addresses: [127.0.0.1] }]
`;
