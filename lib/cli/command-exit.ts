/**
 * Thrown by a command that has already said everything it had to (on stdout
 * or stderr) and only needs kup to exit with `code`.
 */
export class CommandExit extends Error {
  readonly exitCode: number;
  constructor(exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = 'CommandExit';
    this.exitCode = exitCode;
  }
}
