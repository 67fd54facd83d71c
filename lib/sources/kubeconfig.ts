import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { errorMessage, KupError } from '../core/errors.js';

/**
 * Where the API server's address and credentials come from, in kubectl's and
 * kube-proxy's order: --kubeconfig, else $KUBECONFIG, else ~/.kube/config,
 * else the in-cluster service account. Unlike client-node's loadFromDefault,
 * finding none is an error rather than a silent http://localhost:8080.
 */

export interface KubeConfigChoice {
  /** --kubeconfig PATH */
  readonly kubeconfig?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly homeDir?: string;
  /** Prefix for /var/run/secrets/kubernetes.io/serviceaccount (tests). */
  readonly inClusterRoot?: string;
}

export interface LoadedKubeConfig {
  readonly kc: KubeConfig;
  /** How it was found, for logs and the admin face. */
  readonly origin: string;
  readonly server: string;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

const HOW_TO =
  'give --kubeconfig PATH, set $KUBECONFIG, or run kup in a cluster pod; to try kup without a cluster use `kup demo` or `--source file:PATH`';

function fromFiles(files: readonly string[], origin: string): LoadedKubeConfig {
  const kc = new KubeConfig();
  for (const [i, file] of files.entries()) {
    if (!existsSync(file)) throw new KupError('KUP_BAD_FILE', `kubeconfig ${file} does not exist`);
    try {
      if (i === 0) {
        kc.loadFromFile(file);
      } else {
        const more = new KubeConfig();
        more.loadFromFile(file);
        kc.mergeConfig(more);
      }
    } catch (err) {
      throw new KupError('KUP_BAD_FILE', `kubeconfig ${file} cannot be read: ${errorMessage(err)}`, { cause: err });
    }
  }
  return checked(kc, origin);
}

function checked(kc: KubeConfig, origin: string): LoadedKubeConfig {
  const cluster = kc.getCurrentCluster();
  if (!cluster || !cluster.server) {
    throw new KupError(
      'KUP_BAD_FILE',
      `kubeconfig from ${origin} names no cluster with a server for its current context (${kc.getCurrentContext() || 'none set'})`,
    );
  }
  return { kc, origin, server: cluster.server };
}

export function loadKubeConfig(choice: KubeConfigChoice = {}): LoadedKubeConfig {
  const env = choice.env ?? process.env;
  if (choice.kubeconfig !== undefined && choice.kubeconfig !== '') {
    return fromFiles([choice.kubeconfig], choice.kubeconfig);
  }
  const fromEnv = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  if (fromEnv.length > 0) {
    // kubectl skips missing entries of $KUBECONFIG; all missing is the user's mistake.
    const present = fromEnv.filter((f) => existsSync(f));
    if (present.length === 0) {
      throw new KupError('KUP_NO_SOURCE', `$KUBECONFIG names no existing file (${fromEnv.join(delimiter)}); ${HOW_TO}`);
    }
    return fromFiles(present, `$KUBECONFIG (${present.join(delimiter)})`);
  }
  const home = choice.homeDir ?? homedir();
  const userConfig = join(home, '.kube', 'config');
  if (home !== '' && existsSync(userConfig)) return fromFiles([userConfig], userConfig);

  const root = choice.inClusterRoot ?? '';
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT && existsSync(`${root}${SERVICE_ACCOUNT_DIR}/token`)) {
    const kc = new KubeConfig();
    kc.loadFromCluster(root);
    return checked(kc, 'in-cluster service account');
  }
  throw new KupError('KUP_NO_SOURCE', `no Kubernetes API server to follow: ${HOW_TO}`);
}
