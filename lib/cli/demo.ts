import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { asArray, asString, field } from '../core/object-fields.js';
import { KupError } from '../core/errors.js';
import { hostUrl } from '../core/address.js';
import { portLabel } from '../core/types.js';
import { startHttpBackend, startUdpEchoBackend, type DemoBackend } from '../demo/backends.js';
import { startProxy, type ProxyRuntime } from '../runtime/proxy-runtime.js';
import { parseKubeObjects } from '../sources/kube-yaml.js';
import type { RunConfig } from '../runtime/config.js';

/** examples/demo.yaml of the installed package (dist/lib/cli -> package root). */
export const DEMO_FILE = fileURLToPath(new URL('../../../examples/demo.yaml', import.meta.url));

export interface Demo {
  readonly runtime: ProxyRuntime;
  readonly backends: readonly DemoBackend[];
  stop(): Promise<void>;
}

/**
 * Starts a backend for every loopback endpoint the demo file lists (named by
 * its Pod), then the proxy over that file, bound to loopback without iptables.
 */
export async function startDemo(config: RunConfig, logger: Logger): Promise<Demo> {
  const path = config.source.kind === 'file' ? config.source.path : DEMO_FILE;
  const objects = parseKubeObjects(await readFile(path, 'utf8'), path);
  const wanted = new Map<string, { name: string; protocol: 'TCP' | 'UDP'; ip: string; port: number }>();
  for (const slice of objects.slices) {
    for (const ep of asArray(field(slice, 'endpoints'))) {
      const ip = asString(asArray(field(ep, 'addresses'))[0]);
      // The demo only ever starts servers on loopback.
      if (ip === undefined || !ip.startsWith('127.')) continue;
      for (const p of asArray(field(slice, 'ports'))) {
        const port = field(p, 'port');
        const protocol = asString(field(p, 'protocol')) ?? 'TCP';
        if (typeof port !== 'number' || (protocol !== 'TCP' && protocol !== 'UDP')) continue;
        const name = asString(field(ep, 'targetRef', 'name')) ?? `${ip}:${port}`;
        wanted.set(`${protocol}/${ip}/${port}`, { name, protocol, ip, port });
      }
    }
  }
  const backends: DemoBackend[] = [];
  const closeBackends = async (): Promise<void> => {
    await Promise.all(backends.map((b) => b.close()));
  };
  try {
    for (const w of wanted.values()) {
      backends.push(await (w.protocol === 'TCP' ? startHttpBackend(w.name, w.ip, w.port) : startUdpEchoBackend(w.name, w.ip, w.port)));
    }
  } catch (err) {
    await closeBackends();
    const e = err as NodeJS.ErrnoException;
    throw new KupError(
      'KUP_LISTEN_FAILED',
      `cannot start the demo backends: ${e.code === 'EADDRINUSE' ? `port ${(e as { port?: number }).port ?? ''} is in use (is another demo running?)` : e.message}`,
    );
  }
  const runtime = await startProxy({ ...config, source: { kind: 'file', path } }, logger);
  return {
    runtime,
    backends,
    async stop() {
      await runtime.stop();
      await closeBackends();
    },
  };
}

/** What a newcomer reads: how to reach each service through the proxy. */
export function describeDemo(demo: Demo): string {
  const lines: string[] = [];
  const host = demo.runtime.config.bindAddress === '0.0.0.0' ? '127.0.0.1' : demo.runtime.config.bindAddress;
  lines.push(`kube-userspace-proxy demo: ${demo.backends.length} backends on loopback, proxy bound to ${host}`);
  lines.push('');
  const entries = [...demo.runtime.proxier.entries()].sort((a, b) => (a.sp.key < b.sp.key ? -1 : 1));
  for (const p of entries) {
    const sp = p.sp;
    const port = p.internal.port;
    const eps = p.internal.balancer.endpoints;
    const who = `${sp.serviceName}:${portLabel(sp)}/${sp.protocol}`;
    const extra = sp.affinityTimeoutSeconds > 0 ? `, ClientIP affinity ${sp.affinityTimeoutSeconds}s` : '';
    lines.push(`  ${who}  (ClusterIP ${sp.clusterIPs.join(',')}:${sp.port}) -> proxy port ${port}, ${eps.length} endpoint(s)${extra}`);
    if (sp.protocol === 'TCP') {
      const why =
        eps.length === 0
          ? 'no endpoints: refused at once'
          : sp.affinityTimeoutSeconds > 0
            ? 'repeat it: affinity keeps you on one pod'
            : 'repeat it: the answering pod rotates';
      lines.push(`      try: curl -s http://${host}:${port}/   (${why})`);
    } else {
      lines.push(`      try: echo hello | socat - UDP:${host}:${port}   (or: echo hello | nc -u -w1 ${host} ${port})`);
    }
  }
  lines.push('');
  const m = demo.runtime.admin.metricsAddress;
  if (m !== null) {
    lines.push(`Dashboard: ${hostUrl(m)}/   (live: open it, then run the curl lines above)`);
    lines.push(`Table:     kup status --server ${hostUrl(m)}    Path of a packet: kup explain 10.96.100.10:80 --server ${hostUrl(m)}`);
  }
  const h = demo.runtime.admin.healthzAddress;
  if (h !== null) lines.push(`Health:    ${hostUrl(h)}/healthz    Metrics: ${m === null ? 'off' : `${hostUrl(m)}/metrics`}`);
  lines.push('');
  lines.push(
    `Edit ${demo.runtime.config.source.kind === 'file' ? demo.runtime.config.source.path : 'the file'} while this runs: changes apply within a second.`,
  );
  lines.push('Press Ctrl-C to stop.');
  return lines.join('\n');
}
