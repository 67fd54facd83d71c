/**
 * The packet-flow harness: upstream kube-proxy's packet-flow tables run with
 * real packets through `kup run` and real iptables. Three namespaces joined
 * by veth pairs with no route out:
 *
 *   external (203.0.113.2, 203.0.113.130) ── node (203.0.113.1; node IPs 192.168.0.2,
 *   192.168.1.2, 192.168.99.11 — upstream's testNodeIPs; runs kup) ── pods (10.0.0.2/8 and
 *   every endpoint and pod-source IP of every case; node side 10.0.0.1/8)
 *                                   └── world (198.51.100.2: the node's default route)
 *
 * The node forwards, as a Kubernetes node does, so a packet no rule of kup's
 * catches leaves by the default route for the "world" namespace, which
 * answers every TCP connection and UDP datagram it is sent, whatever the
 * address, with "world". So the client tells apart the four outcomes
 * upstream's tables name: an endpoint's IP:port (proxied), "world" (no rule:
 * upstream's ""), a refusal (REJECT), and silence (DROP).
 *
 * A flow's namespace follows from its source IP: 10/8 → pods, 203.0.113/24 → external,
 * anything else (the node's IPs, 127.0.0.1) → node. One backend process in
 * the pods namespace serves every endpoint IP:port of every case and answers
 * with its own IP:port; one kup process serves all cases that share flags,
 * the objects file rewritten between cases (kup reloads it).
 */
import { once } from 'node:events';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';
import { stringify } from 'yaml';
import { KUP } from './cli.js';
import { createNetns, link, type Netns } from './netns.js';
import type { Probe, TryResult } from './flow-client.js';

const SUPPORT = 'dist/spec/support';
export const NODE_NAME = 'test-hostname';
export const NODE_IPS = ['192.168.0.2', '192.168.1.2', '192.168.99.11'] as const;
const STATUS_URL = 'http://127.0.0.1:10249/status';
/** What the world answers: the packet left the node as it came, no rule of kup's caught it. */
export const WORLD = 'world';
const WORLD_PORT = 9;
/** Every TCP connection and UDP datagram that reaches the world, to any address, goes to its one server. */
const WORLD_RULES = `*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -j REDIRECT --to-ports ${WORLD_PORT}
-A PREROUTING -p udp -j REDIRECT --to-ports ${WORLD_PORT}
COMMIT
`;

/**
 * The endpoints that may answer (IP:port), or what the client must see
 * instead. "NONE" is upstream's "" (no rule matched: the world answers);
 * "ACCEPT" is upstream's filter ACCEPT for a port the node itself serves (an HTTP answer from the node).
 */
export type Expect = readonly string[] | 'REJECT' | 'DROP' | 'NONE' | 'ACCEPT';

export interface Flow {
  readonly name: string;
  readonly from: string;
  readonly to: string;
  readonly port: number;
  readonly proto?: 'TCP' | 'UDP' | 'HTTP';
  readonly expect: Expect;
  /**
   * Set where `expect` is deliberately not upstream's table entry: what upstream's
   * table says and why kup (or the real kube-proxy) does otherwise. Documented in
   * the difference table of spec/packet-flows.test.ts and in README.
   */
  readonly deliberate?: string;
}

export interface FlowCase {
  /** Upstream's test function and sub-case. */
  readonly upstream: string;
  readonly objects: readonly unknown[];
  /** kup flags beyond the harness's own (e.g. the local-traffic detector). */
  readonly flags: readonly string[];
  readonly flows: readonly Flow[];
}

export interface FlowOutcome {
  readonly ok: boolean;
  readonly detail: string;
}

function namespaceOf(ip: string): 'pods' | 'external' | 'node' {
  if (ip.startsWith('10.')) return 'pods';
  if (ip.startsWith('203.0.113.')) return 'external';
  return 'node';
}

function endpointsOf(c: FlowCase): [string, number, 'TCP' | 'UDP'][] {
  const out: [string, number, 'TCP' | 'UDP'][] = [];
  for (const f of c.flows) {
    if (!Array.isArray(f.expect)) continue;
    for (const ep of f.expect as readonly string[]) {
      const i = ep.lastIndexOf(':');
      out.push([ep.slice(0, i), Number(ep.slice(i + 1)), f.proto === 'UDP' ? 'UDP' : 'TCP']);
    }
  }
  // Every endpoint the objects name, on every port, so a wrong pick answers too (and is seen).
  for (const o of c.objects) {
    const s = o as { kind?: string; endpoints?: { addresses?: string[] }[]; ports?: { port?: number; protocol?: string }[] };
    if (s.kind !== 'EndpointSlice') continue;
    for (const e of s.endpoints ?? []) {
      for (const a of e.addresses ?? []) {
        for (const p of s.ports ?? []) {
          if (p.port !== undefined && (p.protocol === 'TCP' || p.protocol === 'UDP')) out.push([a, p.port, p.protocol]);
        }
      }
    }
  }
  return out;
}

function firstLine(child: ChildProcess, what: string, timeoutMs = 20_000): Promise<string> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no output; stderr: ${stderr.slice(-2000)}`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${code}; stderr: ${stderr.slice(-2000)}`));
    });
    createInterface({ input: child.stdout! }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
  });
}

export class FlowBench {
  private kup: ChildProcess | null = null;
  private kupFlags = '';
  private kupLog = '';
  /** The objects file as last written. */
  private written = '';
  private readonly dir = mkdtempSync(join(tmpdir(), 'kup-flows-'));
  private readonly file = join(this.dir, 'objects.yaml');

  private constructor(
    readonly node: Netns,
    readonly pods: Netns,
    readonly external: Netns,
  ) {}

  /** Builds the namespaces and starts the backends of every case. */
  static async create(t: Test, cases: readonly FlowCase[]): Promise<FlowBench> {
    const node = await createNetns(t, 'flows13-node');
    const pods = await createNetns(t, 'flows13-pods');
    const external = await createNetns(t, 'flows13-ext');
    await link(external, ['203.0.113.2/24', '203.0.113.130/24'], node, ['203.0.113.1/24', ...NODE_IPS.map((ip) => `${ip}/24`)]);
    const podIPs = new Set<string>();
    const backends = new Map<string, [string, number, 'TCP' | 'UDP']>();
    for (const c of cases) {
      for (const f of c.flows) if (namespaceOf(f.from) === 'pods') podIPs.add(f.from);
      for (const b of endpointsOf(c)) {
        podIPs.add(b[0]);
        backends.set(b.join('/'), b);
      }
    }
    podIPs.delete('10.0.0.2');
    const l = await link(pods, ['10.0.0.2/8'], node, ['10.0.0.1/8']);
    // One `ip -batch` for the many addresses: a command each would take seconds.
    await pods.run('ip', ['-batch', '-'], [...podIPs].map((ip) => `addr add ${ip}/32 dev ${l.aIf}`).join('\n') + '\n');
    await pods.run('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
    await external.run('ip', ['route', 'add', 'default', 'via', '203.0.113.1']);
    // The node's default route (needed anyway: its own packets are routed before its nat OUTPUT
    // chain sees them) leads to the world, which answers whatever reaches it.
    const world = await createNetns(t, 'flows13-world');
    await link(world, ['198.51.100.2/24'], node, ['198.51.100.1/24']);
    await node.run('ip', ['route', 'add', 'default', 'via', '198.51.100.2']);
    await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    await world.run('ip', ['route', 'add', 'default', 'via', '198.51.100.1']);
    await world.run('iptables-restore', [], WORLD_RULES);
    const bench = new FlowBench(node, pods, external);
    t.teardown(() => bench.stop());
    const worldReady = await firstLine(
      world.spawnNode(`${SUPPORT}/flow-backends.js`, [
        JSON.stringify([
          ['0.0.0.0', WORLD_PORT, 'TCP', WORLD],
          ['0.0.0.0', WORLD_PORT, 'UDP', WORLD],
        ]),
      ]),
      'world',
    );
    if (worldReady !== 'ready') throw new Error(`world: ${worldReady}`);
    const ready = await firstLine(pods.spawnNode(`${SUPPORT}/flow-backends.js`, [JSON.stringify([...backends.values()])]), 'backends');
    if (ready !== 'ready') throw new Error(`backends: ${ready}`);
    return bench;
  }

  /** Writes the case's objects (atomically: kup watches the directory) and waits until kup synced them. */
  async apply(c: FlowCase): Promise<void> {
    const since = Date.now();
    const text = stringify({ kind: 'List', items: c.objects });
    const flags = c.flags.join(' ');
    // The same objects on the same kup: already synced (an identical file is no change to kup, so no sync would be seen).
    if (this.kup !== null && flags === this.kupFlags && text === this.written) return;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, this.file);
    this.written = text;
    if (this.kup === null || flags !== this.kupFlags) {
      await this.stopKup();
      this.kupFlags = flags;
      this.kupLog = '';
      this.kup = this.node.spawnNode(KUP, [
        'run',
        '--source',
        `file:${this.file}`,
        '--hostname-override',
        NODE_NAME,
        '--min-sync-period',
        '0',
        '--state-dir',
        join(this.dir, 'state'),
        '--metrics-bind-address',
        '127.0.0.1:10249',
        '--healthz-bind-address',
        '',
        ...c.flags,
      ]);
      this.kup.stderr!.on('data', (d: Buffer) => (this.kupLog = (this.kupLog + d.toString()).slice(-20_000)));
    }
    const r = await this.node.node(`${SUPPORT}/flow-client.js`, ['wait', STATUS_URL, String(since), '20000'], 30_000);
    if (r.code !== 0)
      throw new Error(`kup did not sync ${c.upstream}: ${r.stdout.trim()} ${r.stderr.trim()}\nkup log:\n${this.kupLog.slice(-3000)}`);
  }

  /** Runs every flow of the case; one outcome per flow, in order. */
  async run(c: FlowCase): Promise<FlowOutcome[]> {
    const probes = c.flows.map((f, i): Probe & { ns: 'pods' | 'external' | 'node' } => {
      const answered = Array.isArray(f.expect);
      return {
        ns: namespaceOf(f.from),
        id: String(i),
        proto: f.proto ?? 'TCP',
        src: f.from,
        dst: f.to,
        port: f.port,
        tries: answered ? 3 * (f.expect as readonly string[]).length + 2 : f.expect === 'REJECT' ? 2 : 1,
        timeoutMs: answered ? 3000 : 1500,
        parallel: !answered,
      };
    });
    const results: Record<string, TryResult[]> = {};
    // One namespace after another: two clients at once would share a round-robin.
    for (const ns of ['pods', 'external', 'node'] as const) {
      const mine = probes.filter((p) => p.ns === ns).map(({ ns: _ns, ...p }) => p);
      if (mine.length === 0) continue;
      const netns = ns === 'pods' ? this.pods : ns === 'external' ? this.external : this.node;
      const r = await netns.node(`${SUPPORT}/flow-client.js`, [JSON.stringify(mine)], 120_000);
      if (r.code !== 0) throw new Error(`flow client in ${ns}: exit ${r.code}: ${r.stderr.trim()}`);
      Object.assign(results, JSON.parse(r.stdout.trim()) as Record<string, TryResult[]>);
    }
    return c.flows.map((f, i) => judge(f, results[String(i)] ?? []));
  }

  private async stopKup(): Promise<void> {
    const k = this.kup;
    this.kup = null;
    if (k === null || k.exitCode !== null || k.signalCode !== null) return;
    const exited = once(k, 'exit');
    k.kill('SIGTERM');
    const timer = setTimeout(() => k.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async stop(): Promise<void> {
    await this.stopKup();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const describe = (tries: readonly TryResult[]): string => tries.map((r) => r.reply ?? `${r.error}@${r.ms}ms`).join(', ');

/**
 * What the client saw against what upstream says. Answered: every try got an
 * answer, only from expected endpoints, and from each of them. REJECT: refused
 * (RST, or ICMP unreachable for UDP) within a second, never accepted. DROP:
 * nothing at all before the timeout. NONE (no rule): the world answered, or
 * for a node address the node's own stack refused.
 */
export function judge(flow: Flow, tries: readonly TryResult[]): FlowOutcome {
  const { expect } = flow;
  const seen = describe(tries);
  if (tries.length === 0) return { ok: false, detail: 'not run' };
  if (expect === 'REJECT') {
    const ok = tries.every((r) => r.error === 'ECONNREFUSED' && r.ms < 1000);
    return { ok, detail: `want refused at once, saw ${seen}` };
  }
  if (expect === 'ACCEPT')
    return { ok: tries.every((r) => r.reply?.startsWith('HTTP/') === true), detail: `want an HTTP answer, saw ${seen}` };
  if (expect === 'DROP') return { ok: tries.every((r) => r.error === 'TIMEOUT'), detail: `want no answer, saw ${seen}` };
  if (expect === 'NONE') {
    // To one of the node's own addresses, a packet no rule catches meets the node's stack, where nothing listens.
    if (flow.to.startsWith('127.') || (NODE_IPS as readonly string[]).includes(flow.to)) {
      return { ok: tries.every((r) => r.error === 'ECONNREFUSED'), detail: `want refused by the node's stack (no rule), saw ${seen}` };
    }
    return { ok: tries.every((r) => r.reply === WORLD), detail: `want "${WORLD}" (no rule), saw ${seen}` };
  }
  const want = new Set(expect);
  const got = new Set(tries.map((r) => r.reply ?? `(${r.error})`));
  const ok = tries.every((r) => r.reply !== undefined && want.has(r.reply)) && [...want].every((w) => got.has(w));
  return { ok, detail: `want ${[...want].sort().join(' ')}, saw ${seen}` };
}
