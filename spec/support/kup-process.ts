import { relayArgs } from './relay.js';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { stringify } from 'yaml';
import { finished, startKup, waitForOutput, type Finished } from './cli.js';
import { service, slicesFor, type ServicePortInput } from './objects.js';

/** A `kup run --no-iptables` process over a file with one service, as a user starts it. */
export interface KupProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly done: Promise<Finished>;
  /** The service port's proxy port. */
  readonly port: number;
  readonly metricsUrl: string;
  /** Descriptors the process holds now (/proc/PID/fd). */
  openFds(): number;
  /** A sample of /metrics, or NaN when absent. */
  metric(name: string, labelPart?: string): Promise<number>;
}

/** Kubernetes objects written as one `kind: List` file in a temp dir the test removes; its path. */
export async function writeObjectsFile(t: { teardown(fn: () => unknown): void }, items: readonly unknown[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kup-objects-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'objects.yaml');
  await writeFile(file, stringify({ kind: 'List', items }));
  return file;
}

/**
 * `kup run` as a user tries it on a laptop: no rules, listeners on loopback,
 * the file source; admin servers on kernel-chosen loopback ports unless
 * `admin` says otherwise ("" turns one off).
 */
export function loopbackRunArgs(file: string, admin: { healthz?: string; metrics?: string } = {}, extra: readonly string[] = []): string[] {
  return [
    'run',
    '--no-iptables',
    '--bind-address',
    '127.0.0.1',
    '--source',
    `file:${file}`,
    '--healthz-bind-address',
    admin.healthz ?? '',
    '--metrics-bind-address',
    admin.metrics ?? '127.0.0.1:0',
    // KUP_TEST_RELAY picks the relay (a later --relay in `extra` wins).
    ...relayArgs(),
    ...extra,
  ];
}

export async function startKupProcess(
  t: { teardown(fn: () => unknown): void },
  opts: {
    endpoints: number[];
    port?: ServicePortInput;
    protocol?: 'TCP' | 'UDP';
    grace?: string;
    extraArgs?: string[];
    env?: NodeJS.ProcessEnv;
  },
): Promise<KupProcess> {
  const portSpec: ServicePortInput = opts.port ?? { name: 'p', port: 80 };
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [portSpec] }),
    ...slicesFor('web', portSpec.name ?? 'p', opts.endpoints, portSpec.protocol === 'UDP' ? 'UDP' : 'TCP'),
  ]);
  const child = startKup(loopbackRunArgs(file, {}, ['--shutdown-grace-period', opts.grace ?? '2s', ...(opts.extraArgs ?? [])]), opts.env);
  const done = finished(child, 120_000);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const port = Number((await waitForOutput(child, /"proxyPort":(\d+)/))[1]);
  const metricsUrl = (await waitForOutput(child, /"dashboard":"(http:\/\/[^"]+?)\/?"/))[1] ?? '';
  const pid = child.pid ?? 0;
  return {
    child,
    done,
    port,
    metricsUrl,
    openFds: () => readdirSync(`/proc/${pid}/fd`).length,
    async metric(name, labelPart = '') {
      const text = await (await fetch(`${metricsUrl}/metrics`)).text();
      for (const line of text.split('\n')) {
        if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
          if (labelPart !== '' && !line.includes(labelPart)) continue;
          return Number(line.slice(line.lastIndexOf(' ') + 1));
        }
      }
      return Number.NaN;
    },
  };
}
