#!/usr/bin/env node
import { main } from '../lib/cli/main.js';

const code = await main(process.argv);
// Let pending writes drain; anything still open (a leaked timer) must not keep us alive.
process.exitCode = code;
setTimeout(() => process.exit(code), 200).unref();
