#!/usr/bin/env node
import { main } from '../lib/cli/main.js';

const code = await main(process.argv);
// Exit explicitly once stdout and stderr have taken what was written: a
// natural exit waits, in Node's environment cleanup, for every handle to
// close, and one that never does (a socket Node failed to close) would keep a
// stopped kup spinning there for ever. A leaked timer must not keep it alive either.
process.exitCode = code;
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
setTimeout(() => process.exit(code), 200).unref();
