// `--help` / `-h` on every subcommand: its usage on stdout, exit 0 (before any other argument is
// parsed, so `vmsandbox run --help` never starts anything).

/** Whether argv asks for help (an argument after `--` is a positional, never an option). */
export function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** Print `usage` (with a final newline) if argv asks for help; returns whether it did. */
export function printHelp(argv: readonly string[], usage: string): boolean {
  if (!wantsHelp(argv)) return false;
  process.stdout.write(usage.endsWith('\n') ? usage : `${usage}\n`);
  return true;
}
