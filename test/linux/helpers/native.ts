// native/ for the real-kernel tests: the sandbox's own parts (make), and the C programs the tests
// run (native/test/*.c, `make test-programs`): the escape helper and the subreaper.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nativeBuildDir } from '../../../effects/linux/native.js';
import { repoRoot } from './paths.js';

/** Build native/ if its outputs are missing. */
export function ensureNative(): void {
  const dir = nativeBuildDir();
  if (!existsSync(join(dir, 'vmsandbox-init')) || !existsSync(join(dir, 'libvmsandbox.so'))) {
    execFileSync('make', ['-C', join(repoRoot, 'native')], { stdio: 'inherit' });
  }
}

let ccReason: string | null | undefined;

/** Why `cc -static` cannot link here (no static libc), so the C test programs cannot be built; or null. */
export function staticCcSkipReason(): string | null {
  if (ccReason !== undefined) return ccReason;
  const dir = mkdtempSync('/tmp/vmsandbox-cc-');
  try {
    writeFileSync(join(dir, 't.c'), 'int main(void) { return 0; }\n');
    execFileSync('cc', ['-static', '-o', join(dir, 't'), join(dir, 't.c')], { stdio: 'pipe' });
    execFileSync(join(dir, 't'));
    ccReason = null;
  } catch (e) {
    ccReason = `cc -static does not work here: ${(e as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return ccReason;
}

/**
 * The path of a C test program, built first by `make test-programs` (make rebuilds it if its
 * source changed). Call only when staticCcSkipReason() is null: a failure here is the program's
 * source not compiling (-Werror), which fails the test.
 *   escape-helper  subcommands probing escapes (ptrace, pidfd, cgroup moves, setuid); see its source
 *   reaper         a subreaper running a command and reporting every process it reaps (underReaper)
 *   seccomp-probe  user namespaces, clone3, the i386 table, same-uid siblings, keyrings; see its source
 *   audit-ctl      the kernel's audit switch (what auditctl -s / -e do)
 */
export function testProgram(name: 'escape-helper' | 'reaper' | 'seccomp-probe' | 'audit-ctl'): string {
  execFileSync('make', ['-s', '-C', join(repoRoot, 'native'), 'test-programs'], { stdio: 'inherit' });
  return join(repoRoot, 'native', 'build', 'test', name);
}

export interface ReaperRun {
  /** The reaper's direct child (what it ran). */
  child: Promise<number>;
  /** Every stdout line that is not the reaper's own (the child's output, JSON logs, ...). */
  lines: string[];
  /** `exit <code>` or `signal <signo>` of every process the reaper reaped, by pid. */
  reaped: Map<number, string>;
  /** Resolves with how `pid` ended once the reaper reaped it, or null after timeoutMs. */
  waitReaped(pid: number, timeoutMs: number): Promise<string | null>;
  /** Resolves with the first line matching, or null after timeoutMs. */
  waitLine(re: RegExp, timeoutMs: number): Promise<string | null>;
  /** The reaper's own exit (it exits once it has no child left). */
  exited: Promise<number | null>;
  stderr(): string;
}

/** Run argv under the subreaper (`reaper`: testProgram('reaper')): orphans are reaped at once and reported. */
export function underReaper(reaper: string, argv: string[], env: NodeJS.ProcessEnv = process.env): ReaperRun {
  const proc = spawn(reaper, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  const reaped = new Map<number, string>();
  const waiters = new Set<() => void>();
  let buf = '';
  let err = '';
  let childPid: (pid: number) => void = () => undefined;
  const child = new Promise<number>((r) => (childPid = r));
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let m: RegExpExecArray | null;
      if ((m = /^child (\d+)$/.exec(line))) childPid(Number(m[1]));
      else if ((m = /^reaped (\d+) ((?:exit|signal) \d+)$/.exec(line))) reaped.set(Number(m[1]), m[2]!);
      else lines.push(line);
    }
    for (const w of [...waiters]) w();
  });
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const wait = <T>(get: () => T | null, timeoutMs: number): Promise<T | null> =>
    new Promise((resolve) => {
      const check = () => {
        const v = get();
        if (v !== null) {
          clearTimeout(t);
          waiters.delete(check);
          resolve(v);
        }
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        resolve(get());
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return {
    child,
    lines,
    reaped,
    exited,
    stderr: () => err,
    waitReaped: (pid, timeoutMs) => wait(() => reaped.get(pid) ?? null, timeoutMs),
    waitLine: (re, timeoutMs) => wait(() => lines.find((l) => re.test(l)) ?? null, timeoutMs),
  };
}
