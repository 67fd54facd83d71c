import { readFile, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';

const SYSCTL = '/proc/sys/net/ipv4/tcp_migrate_req';

/**
 * With SO_REUSEPORT each listening socket has its own accept queue, and the
 * kernel spreads new connections over the old and the new kup's sockets until
 * the old one closes. A connection still queued at the old socket when it
 * closes is reset, unless net.ipv4.tcp_migrate_req is 1 (Linux 5.14+): then
 * the kernel moves it to the successor's socket. The kup that manages the
 * node's rules (`mayWrite`) turns it on for the node; otherwise it says why
 * a hand-over may reset a few connections.
 */
export async function enableListenerMigration(mayWrite: boolean, log: Logger): Promise<void> {
  let now: string;
  try {
    now = (await readFile(SYSCTL, 'utf8')).trim();
  } catch {
    log.warn('net.ipv4.tcp_migrate_req missing (Linux < 5.14): connections queued at the old kup when it stops accepting are reset');
    return;
  }
  if (now !== '0') return;
  if (mayWrite) {
    try {
      await writeFile(SYSCTL, '1');
      log.info('set net.ipv4.tcp_migrate_req=1: connections queued at the old kup move to this one');
      return;
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'cannot set net.ipv4.tcp_migrate_req=1');
    }
  }
  log.warn('net.ipv4.tcp_migrate_req is 0: connections queued at the old kup when it stops accepting are reset; set it to 1');
}
