// kup's version is read by the admin server too (kubernetes_build_info), which must not import lib/cli.
export { kupVersion } from '../runtime/version.js';
