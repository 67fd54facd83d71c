#!/usr/bin/env -S node --disable-sigusr1 --max-semi-space-size=8
// --disable-sigusr1: SIGUSR1 would otherwise open Node's inspector on 127.0.0.1:9229,
// unauthenticated, letting anyone who can signal kup run code as root inside it.
// --max-semi-space-size=8 (MiB): the initial list of 10,000 services grows V8's
// young generation to its maximum (128 MiB committed on a large machine), which
// it keeps for good; 8 MiB semi-spaces cost kup ~110 MiB less RSS at that scale.

// A second guard for `node dist/bin/kup.js` started without the flag: a SIGUSR1
// listener takes the signal from the handler that would start the inspector.
// Installed before the rest of kup loads, to leave the shortest window.
process.on('SIGUSR1', () => {
  const line = { level: 'warn', time: new Date().toISOString(), component: 'kup', msg: 'SIGUSR1 ignored: kup opens no debugger' };
  process.stderr.write(`${JSON.stringify(line)}\n`);
});
const { main } = await import('../lib/cli/main.js');

const code = await main(process.argv);
// Exit explicitly once stdout and stderr have taken what was written: a
// natural exit waits, in Node's environment cleanup, for every handle to
// close, and one that never does (a socket Node failed to close) would keep a
// stopped kup spinning there for ever. A leaked timer must not keep it alive either.
process.exitCode = code;
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
setTimeout(() => process.exit(code), 200).unref();
