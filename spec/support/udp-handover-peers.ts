/**
 * UDP peers for the UDP hand-over test, run inside its network namespace.
 *   backend PORT: answers each datagram with `<datagram>|<sender port>`, so the
 *     client learns which session socket (hence which kup) relayed it.
 *   client HOST PORT: one long-lived socket (an existing client) sends `a <n>`
 *     every 50 ms (one retry after 500 ms, as a resolver would); prints
 *     `running` at its first answer. stdin lines:
 *       `mark`  -> forget the session ports seen so far; prints `marked`;
 *       `new N` -> N fresh sockets (new clients) send one query each; prints
 *                  JSON {lost, ports} (session ports that answered them);
 *       `stop`  -> stops the long-lived client; prints JSON {sent, answered,
 *                  retried, lost, ports} (session ports since the mark).
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';

const [mode, a = '', b = ''] = process.argv.slice(2);

if (mode === 'backend') {
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => udp.send(`${m.toString()}|${r.port}`, r.port, r.address));
  udp.bind(Number(a), '127.0.0.1', () => process.stdout.write('ready\n'));
} else {
  const host = a;
  const port = Number(b);
  const print = (o: unknown): void => void process.stdout.write(`${typeof o === 'string' ? o : JSON.stringify(o)}\n`);

  /** Sends `msg` on `sock` until answered (one retry); resolves the relaying session port, or null when lost. */
  const ask = (sock: dgram.Socket, msg: string, retried: () => void): Promise<number | null> =>
    new Promise((resolve) => {
      let tries = 0;
      let timer: NodeJS.Timeout;
      const onMessage = (m: Buffer): void => {
        const [body, via] = m.toString().split('|');
        if (body !== msg) return;
        clearTimeout(timer);
        sock.off('message', onMessage);
        resolve(Number(via));
      };
      sock.on('message', onMessage);
      const send = (): void => {
        if (++tries === 2) retried();
        sock.send(msg, port, host);
        timer = setTimeout(() => {
          if (tries < 2) return send();
          sock.off('message', onMessage);
          resolve(null);
        }, 500);
      };
      send();
    });

  const old = { sent: 0, answered: 0, retried: 0, lost: 0, ports: new Set<number>() };
  const sock = dgram.createSocket('udp4');
  let stopped = false;
  let running = false;
  const loop = (async () => {
    for (let n = 0; !stopped; n++) {
      old.sent++;
      const via = await ask(sock, `a ${n}`, () => old.retried++);
      if (via === null) old.lost++;
      else {
        old.answered++;
        old.ports.add(via);
        if (!running) {
          running = true;
          print('running');
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, arg] = line.trim().split(' ');
    if (cmd === 'mark') {
      old.ports.clear();
      print('marked');
    } else if (cmd === 'new') {
      void (async () => {
        const socks = Array.from({ length: Number(arg) }, () => dgram.createSocket('udp4'));
        const via = await Promise.all(socks.map((s, i) => ask(s, `n ${i}`, () => undefined)));
        for (const s of socks) s.close();
        print({ lost: via.filter((v) => v === null).length, ports: [...new Set(via.filter((v) => v !== null))] });
      })();
    } else if (cmd === 'stop') {
      stopped = true;
      void loop.then(() => {
        sock.close();
        print({ ...old, ports: [...old.ports] });
        process.exit(0);
      });
    }
  });
}
