import { networkInterfaces } from 'node:os';
import { hostname } from 'node:os';
import { type Command, Option } from 'commander';
import { explain, formatExplanation, parseDestination } from '../admin/explain.js';
import { formatStatusTable } from '../admin/status-table.js';
import { isValidIP } from '../core/address.js';
import { LB_STRATEGIES, type LbStrategyName } from '../core/balancer/strategy.js';
import { KupError } from '../core/errors.js';
import { createLogger } from '../log.js';
import { CommandExit } from './command-exit.js';
import { offlineStatus } from './offline-status.js';
import { parseSource } from './options.js';
import { DEFAULT_STATUS_SERVER, fetchStatus } from './status-client.js';

/** This machine's addresses: a NodePort matches on the node's own addresses. */
function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

interface StatusFlags {
  server: string;
  json?: boolean;
}

interface ExplainFlags {
  server?: string;
  source?: string;
  kubeconfig?: string;
  hostnameOverride?: string;
  lbStrategy: string;
  client?: string;
}

/** `kup status` and `kup explain`, registered on `program`. */
export function addAdminCommands(program: Command): void {
  program
    .command('status')
    .description("print a running kup's service table (from its /status)")
    .option('--server <url>', "kup's metrics server", DEFAULT_STATUS_SERVER)
    .option('--json', 'print the /status document itself')
    .action(async (flags: StatusFlags) => {
      const doc = await fetchStatus(flags.server);
      process.stdout.write(flags.json === true ? `${JSON.stringify(doc, null, 2)}\n` : formatStatusTable(doc));
    });

  program
    .command('explain')
    .description('tell the path a packet to IP:PORT takes: the rule, the listener, the endpoints, the next pick')
    .argument('<destination>', 'IP:PORT[/tcp|udp], e.g. 10.96.0.10:53/udp or [fd00::1]:80')
    .option('--server <url>', `ask a running kup (default ${DEFAULT_STATUS_SERVER})`)
    .option('--source <source>', 'work it out from "kubernetes" or "file:PATH" without running the proxy')
    .option('--kubeconfig <path>', 'kubeconfig for --source kubernetes')
    .option('--hostname-override <name>', "with --source: this node's name (default: the host name)")
    .addOption(
      new Option('--lb-strategy <strategy>', 'with --source: the strategy kup would run with')
        .choices(LB_STRATEGIES)
        .default('round-robin'),
    )
    .option('--client <ip>', 'follow the session affinity of this client for the next pick')
    .action(async (destination: string, flags: ExplainFlags) => {
      const d = parseDestination(destination);
      if (flags.server !== undefined && flags.source !== undefined) {
        throw new KupError('KUP_BAD_FLAG', 'give either --server (ask a running kup) or --source (work it out offline), not both');
      }
      const client = flags.client ?? '';
      if (client !== '' && !isValidIP(client)) throw new KupError('KUP_BAD_FLAG', `--client: "${client}" is not an IP address`);
      let doc;
      if (flags.source !== undefined) {
        const nodeName = (flags.hostnameOverride ?? hostname()).trim().toLowerCase();
        doc = await offlineStatus({
          source: parseSource(flags.source),
          kubeconfig: flags.kubeconfig ?? null,
          nodeName,
          lbStrategy: flags.lbStrategy as LbStrategyName,
          logger: createLogger('warn'),
        });
        if (client !== '') doc = { ...doc, client };
      } else {
        doc = await fetchStatus(flags.server ?? DEFAULT_STATUS_SERVER, client);
      }
      const x = explain(doc, d, localAddresses());
      process.stdout.write(formatExplanation(doc, x));
      if (x.matches.length === 0) throw new CommandExit(1);
    });
}
