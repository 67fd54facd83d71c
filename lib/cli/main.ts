import { localTrafficDetector } from '../core/local-detector.js';
import { Command, CommanderError, Option } from 'commander';
import { errorMessage, isKupError, KupError } from '../core/errors.js';
import { hostsBlock } from '../core/loopback-address.js';
import { createLogger, type LogLevel } from '../log.js';
import { cleanupIptables, cleanupKubeProxyIptables } from '../iptables/applier.js';
import { resolveNodePortIPs } from '../core/nodeport-addresses.js';
import { detectHostIPs, localAddresses } from '../iptables/host-ips.js';
import { loadTable } from '../runtime/load-table.js';
import { startProxy, type ProxyRuntime } from '../runtime/proxy-runtime.js';
import { addAdminCommands } from './admin-commands.js';
import { CommandExit } from './command-exit.js';
import { rulesScript } from './rules.js';
import { describeDemo, DEMO_FILE, startDemo } from './demo.js';
import type { HostPort } from '../core/address.js';
import { parseRunFlags, RUN_DEFAULTS, type RunFlags } from './options.js';
import { kupVersion } from './version.js';
import { mergeFlags, readConfigFile, writeEffectiveConfig } from './config-file.js';

/** Exit codes: 0 done, 1 runtime failure, 2 a mistake in how kup was called. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/**
 * After a stop signal, how long past --shutdown-grace-period kup may take to
 * remove its rules and close its servers before it exits regardless.
 */
export const STOP_DEADLINE_MARGIN_MS = 5000;

function addRunFlags(cmd: Command): Command {
  return cmd
    .option('--source <source>', 'where Services and EndpointSlices come from: "kubernetes" or "file:PATH"')
    .option('--kubeconfig <path>', 'kubeconfig for the live source (else $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--hostname-override <name>', "this node's name, to tell local endpoints (default: the host name)")
    .option(
      '--bind-address <ip>',
      "address the proxy listeners bind to (the legacy userspace meaning; not kube-proxy's later 'node IP' meaning)",
      RUN_DEFAULTS.bindAddress,
    )
    .option('--proxy-port-range <range>', 'proxy ports: BEGIN-END, BEGIN+OFFSET, or empty for kernel-chosen', RUN_DEFAULTS.proxyPortRange)
    .option('--udp-timeout <duration>', 'idle time after which a UDP session is closed', RUN_DEFAULTS.udpTimeout)
    .option('--udp-max-sessions <n>', 'most UDP sessions per service port (oldest evicted)', RUN_DEFAULTS.udpMaxSessions)
    .option('--relay <relay>', 'who moves TCP bytes once connected: auto (native when its addon loads), native, js', RUN_DEFAULTS.relay)
    .option('--tcp-idle-timeout <duration>', 'close a TCP connection idle this long both ways (0: never)', RUN_DEFAULTS.tcpIdleTimeout)
    .option(
      '--udp-buffer-size <bytes>',
      "receive and send buffer asked for each UDP socket (0: the kernel's default)",
      RUN_DEFAULTS.udpBufferSize,
    )
    .addOption(
      new Option('--lb-strategy <strategy>', 'how endpoints are chosen')
        .choices(['round-robin', 'least-connections'])
        .default(RUN_DEFAULTS.lbStrategy),
    )
    .option('--iptables', 'install iptables rules steering service IPs to the listeners (needs root)', true)
    .option('--no-iptables', 'run without iptables rules (demo, laptops): reach services at their proxy ports')
    .option('--sync-period <duration>', 'how often everything is fully re-synced', RUN_DEFAULTS.syncPeriod)
    .option('--min-sync-period <duration>', 'changes are applied at most this often (0 allowed)', RUN_DEFAULTS.minSyncPeriod)
    .option('--healthz-bind-address <ip:port>', 'health server address (empty: off)', RUN_DEFAULTS.healthzBindAddress)
    .option('--metrics-bind-address <ip:port>', 'metrics, /status and dashboard address (empty: off)', RUN_DEFAULTS.metricsBindAddress)
    .option(
      '--service-cluster-ip-range <cidr>',
      'file source: where Services without a clusterIP get one',
      RUN_DEFAULTS.serviceClusterIpRange,
    )
    .option('--kube-api-qps <qps>', 'API client rate (accepted; the live source lists once, then watches)', RUN_DEFAULTS.kubeApiQps)
    .option('--kube-api-burst <n>', 'API client burst (accepted, as --kube-api-qps)', RUN_DEFAULTS.kubeApiBurst)
    .option('--cluster-cidr <cidrs>', "the pods' CIDRs, comma-separated (for --detect-local-mode ClusterCIDR)", RUN_DEFAULTS.clusterCidr)
    .option(
      '--nodeport-addresses <list>',
      'NodePorts only on the node addresses in these CIDRs (or primary/localhost/all), comma-separated; empty: every local address',
      RUN_DEFAULTS.nodeportAddresses,
    )
    .option(
      '--iptables-localhost-nodeports [bool]',
      "accept NodePorts at 127.0.0.1 from the node's own processes (IPv4; as kube-proxy's iptables mode); false turns it off",
    )
    .addOption(
      new Option('--detect-local-mode <mode>', 'how pod traffic is told apart (short-circuits it to all endpoints of eTP-Local Services)')
        .choices(['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'])
        .default(RUN_DEFAULTS.detectLocalMode),
    )
    .option('--pod-bridge-interface <name>', 'for --detect-local-mode BridgeInterface', RUN_DEFAULTS.podBridgeInterface)
    .option('--pod-interface-name-prefix <prefix>', 'for --detect-local-mode InterfaceNamePrefix', RUN_DEFAULTS.podInterfaceNamePrefix)
    .option('--shutdown-grace-period <duration>', 'on SIGTERM, how long open connections may finish', RUN_DEFAULTS.shutdownGracePeriod)
    .option('--state-dir <dir>', 'state directory; holds the lock allowing one kup with iptables per directory', RUN_DEFAULTS.stateDir)
    .option('--no-handover', 'exit (KUP_ALREADY_RUNNING) instead of taking over from a kup running with the same --state-dir')
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .default(RUN_DEFAULTS.logLevel),
    );
}

/**
 * --expose-on-loopback: the hosts-file block on stdout (the log is on stderr),
 * after the first sync and again whenever the set of Services changes, so the
 * last block printed is always the one to paste.
 */
function printHostsBlock(runtime: ProxyRuntime): void {
  let last = '';
  const print = (): void => {
    const block = hostsBlock(runtime.proxier.exposedServices().values());
    if (block === last) return;
    last = block;
    process.stdout.write(block);
  };
  print();
  runtime.syncer.onSync(print);
}

function waitForSignal(onSignal: (sig: NodeJS.Signals) => void = () => undefined): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      onSignal(sig);
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      // A second signal while stopping means "now".
      const hard = (): never => process.exit(EXIT_FAILURE);
      process.once('SIGINT', hard);
      process.once('SIGTERM', hard);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export function buildProgram(): Command {
  const program = new Command()
    .name('kup')
    .description('kube-userspace-proxy: a userspace L4 service proxy for Kubernetes')
    .version(kupVersion(), '-V, --version', "print kup's version")
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  addAdminCommands(program);

  addRunFlags(program.command('run').description('run the proxy'))
    .option('--config <file>', "kube-proxy's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1); flags given override it")
    .option('--write-config-to <file>', 'write the effective configuration as a KubeProxyConfiguration and exit')
    .option('--cleanup', 'remove the iptables rules kup installed and exit (as `kup cleanup`)')
    .option('--iptables-sync-period <duration>', 'kube-proxy name of --sync-period')
    .option('--iptables-min-sync-period <duration>', 'kube-proxy name of --min-sync-period')
    .option(
      '--expose-on-loopback',
      'laptops: give each Service its own 127.x.y.z and listen there at its real ports (instead of proxy ports on --bind-address); prints a hosts-file block; implies --no-iptables',
    )
    .action(async (flags: RunFlags, cmd: Command) => {
      if (flags.exposeOnLoopback === true && flags.iptables && cmd.getOptionValueSource('iptables') === 'cli') {
        throw new KupError(
          'KUP_BAD_FLAG',
          '--expose-on-loopback runs without iptables rules (the listeners are the exposure); drop --iptables',
        );
      }
      if (flags.cleanup === true) {
        await cleanupIptables(createLogger(flags.logLevel as LogLevel));
        return;
      }
      const file = flags.config === undefined ? null : await readConfigFile(flags.config);
      const merged = mergeFlags(flags, file, (name) => cmd.getOptionValueSource(name) === 'cli', `--config ${flags.config ?? ''}`);
      const config = parseRunFlags(merged.flags, merged.labels);
      const log = createLogger(config.logLevel);
      merged.report(log, config);
      if (flags.writeConfigTo !== undefined) {
        await writeEffectiveConfig(flags.writeConfigTo, config);
        log.info({ file: flags.writeConfigTo }, 'effective configuration written');
        return;
      }
      log.info({ source: config.source, node: config.nodeName, lbStrategy: config.lbStrategy }, 'starting');
      // From the start: SIGHUP's default action would kill kup and leave its rules behind.
      let runtime: ProxyRuntime | null = null;
      const onHup = (): void => {
        if (runtime === null) {
          log.info({ signal: 'SIGHUP' }, 'SIGHUP while starting: the first sync reads the source anyway');
          return;
        }
        runtime.reload().then(
          (done) => log.info({ signal: 'SIGHUP' }, `SIGHUP: ${done}`),
          (err: unknown) =>
            log.error({ signal: 'SIGHUP', err: errorMessage(err) }, 'SIGHUP: re-read failed; still serving the last good state'),
        );
      };
      // Left installed until the process exits: a SIGHUP while stopping must not kill it half-way.
      process.on('SIGHUP', onHup);
      // Before start-up too: SIGTERM's default action, once the proxy ports (and rules) are up but
      // before startProxy returned, would exit by the signal and leave the rules behind. A signal
      // while starting (a rollout, a quick restart) stops kup cleanly once started; a second one exits at once.
      let started = false;
      const signalled = waitForSignal((sig) => {
        if (!started) log.info({ signal: sig }, `${sig} while starting: stopping once started (again to exit at once)`);
      });
      runtime = await startProxy(config, log);
      started = true;
      if (config.exposeOnLoopback) printHostsBlock(runtime);
      const sig = await Promise.race([signalled, runtime.handedOver.then(() => 'hand-over' as const)]);
      if (sig === 'hand-over') log.info('stopping: handed over to a successor');
      else log.info({ signal: sig }, 'stopping');
      // The last word: a stop that does not finish (a socket or server that never
      // closes) must not keep a stopped proxy alive for ever.
      const hard = setTimeout(() => {
        log.error({ afterMs: config.shutdownGracePeriodMs + STOP_DEADLINE_MARGIN_MS }, 'stop did not finish in time; exiting');
        process.exit(EXIT_OK);
      }, config.shutdownGracePeriodMs + STOP_DEADLINE_MARGIN_MS);
      await runtime.stop();
      clearTimeout(hard);
      log.info('stopped');
    });

  addRunFlags(program.command('demo').description('run demo backends on loopback and the proxy over examples/demo.yaml')).action(
    async (flags: RunFlags, cmd: Command) => {
      const explicit = (name: string): boolean => cmd.getOptionValueSource(name) === 'cli';
      const parsed = parseRunFlags({
        ...flags,
        source: flags.source ?? `file:${DEMO_FILE}`,
        hostnameOverride: flags.hostnameOverride ?? 'demo-node',
        // A demo on a laptop should not listen on every interface, nor need root.
        bindAddress: explicit('bindAddress') ? flags.bindAddress : '127.0.0.1',
        iptables: false,
        logLevel: explicit('logLevel') ? flags.logLevel : 'warn',
      });
      // The demo's admin servers stay on loopback too; only their ports come from the flags.
      const loopback = (a: HostPort | null): HostPort | null =>
        a === null ? null : { host: a.host === '::1' ? '::1' : '127.0.0.1', port: a.port };
      const config = {
        ...parsed,
        healthzBindAddress: loopback(parsed.healthzBindAddress),
        metricsBindAddress: loopback(parsed.metricsBindAddress),
      };
      const log = createLogger(config.logLevel);
      const demo = await startDemo(config, log);
      process.stdout.write(`${describeDemo(demo)}\n`);
      await waitForSignal();
      process.stdout.write('stopping the demo...\n');
      await demo.stop();
      process.stdout.write('stopped\n');
    },
  );
  program
    .command('rules')
    .description('print the iptables-restore script kup run installs (or would install) for a source')
    .option('--source <source>', 'where Services and EndpointSlices come from: "kubernetes" or "file:PATH"')
    .option('--kubeconfig <path>', 'kubeconfig for the live source')
    .option('--hostname-override <name>', "this node's name, to tell local endpoints")
    .option('--bind-address <ip>', 'address the proxy listeners bind to', RUN_DEFAULTS.bindAddress)
    .option('--proxy-port-range <range>', 'number listeners from this range', RUN_DEFAULTS.proxyPortRange)
    .option(
      '--service-cluster-ip-range <cidr>',
      'file source: where Services without a clusterIP get one',
      RUN_DEFAULTS.serviceClusterIpRange,
    )
    .action(async (flags: Partial<RunFlags>) => {
      const config = parseRunFlags({ ...RUN_DEFAULTS, iptables: true, ...flags });
      const log = createLogger('warn');
      const { table, warnings } = await loadTable({
        source: config.source,
        kubeconfig: config.kubeconfig,
        nodeName: config.nodeName,
        logger: log,
        serviceCIDR: config.serviceClusterIPRange,
      });
      for (const w of warnings) log.warn(w);
      const hostIPs = await detectHostIPs();
      process.stdout.write(
        rulesScript({
          table,
          bindAddress: config.bindAddress,
          portRange: config.portRange,
          hostIPs,
          nodePortIPs: resolveNodePortIPs(config.nodePortAddresses, localAddresses(), hostIPs),
          localhostNodePorts: config.localhostNodePorts,
          // NodeCIDR needs the running node's Node object: `kup rules` shows no detector for it.
          localDetector: localTrafficDetector({
            mode: config.detectLocal.mode,
            clusterCIDRs: config.clusterCIDRs,
            nodePodCIDRs: null,
            bridgeInterface: config.detectLocal.bridgeInterface,
            interfaceNamePrefix: config.detectLocal.interfaceNamePrefix,
          }).detector,
        }),
      );
    });

  program
    .command('cleanup')
    .description('remove every iptables chain and jump rule kup installed (idempotent; needs root)')
    .option(
      '--kube-proxy-rules',
      "instead, remove kube-proxy's iptables-mode rules (KUBE-SERVICES, KUBE-SVC-*, ... as `kube-proxy --cleanup`; kubelet's chains stay) once kube-proxy is parked",
    )
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action(async (flags: { logLevel: LogLevel; kubeProxyRules?: boolean }) => {
      const logger = createLogger(flags.logLevel);
      await (flags.kubeProxyRules === true ? cleanupKubeProxyIptables(logger) : cleanupIptables(logger));
    });
  return program;
}

/** Runs kup with `argv` (as process.argv); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommandExit) return err.exitCode;
    if (err instanceof CommanderError) {
      // Commander already printed its one line (or the help / version).
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (isKupError(err)) {
      process.stderr.write(`kup: ${err.message}\n`);
      return err.code === 'KUP_BAD_FLAG' || err.code === 'KUP_BAD_CONFIG' ? EXIT_USAGE : EXIT_FAILURE;
    }
    process.stderr.write(`kup: internal error: ${errorMessage(err)}\n${(err as Error).stack ?? ''}\n`);
    return EXIT_FAILURE;
  }
}
