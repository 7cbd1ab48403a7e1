// `vmsandbox run`'s preflight: before it creates anything, run asks the same question as
// `vmsandbox check` — can this host enforce the config? — with the same function
// (hostCheckAndPlan, effects/linux/hostCheck.ts), and refuses where check would have: exit 111, one
// error record whose `problems` are check's FAIL lines (field path, what is wrong, the fix).
// Warnings never refuse. Nothing here creates anything: stat, read, the Landlock ABI probe.
// What passes is planned from the facts the check saw (plan/index.ts): the plan `run` executes
// is the one `check` judged.

import type { VmConfig } from '../config/types.js';
import { hostCheckAndPlan, type HostReport } from '../effects/linux/hostCheck.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { mustPlan, type SandboxPlan } from '../plan/index.js';
import type { Logger } from '../cli/log.js';

/** The host check to run, with the plan it made of the config from the facts it saw. */
export type PreflightCheck = (config: VmConfig) => Promise<{ report: HostReport; plan: SandboxPlan | null }>;

/**
 * Run the host check; log and return the exit code to refuse with (111, setupFailed) if any item
 * failed, or the plan to execute. `problems` are `<field path or host item>: <message>`, as check
 * prints them after `FAIL:`.
 */
export async function preflight(config: VmConfig, log: Logger, check: PreflightCheck = (c) => hostCheckAndPlan(c)): Promise<number | SandboxPlan> {
  const started = Date.now();
  const { report, plan } = await check(config);
  const problems = report.items.filter((x) => x.level === 'fail').map((x) => `${x.item}: ${x.message}`);
  const warnings = report.items.filter((x) => x.level === 'warn').map((x) => `${x.item}: ${x.message}`);
  // Warnings never refuse; the operator reading the log at 3 a.m. still sees what check said.
  if (warnings.length) log.warn({ warnings }, `vmsandbox check warns (${warnings.length}): ${warnings.join('; ')}`);
  if (problems.length === 0) {
    // Every refusal of the plan is a failed item of the check, so the check made its plan (were it
    // ever missing, mustPlan plans again from the same facts, or throws the refusal).
    return plan ?? mustPlan(config, { landlockAbi: report.facts.landlockAbi ?? 0, cgroupControllers: report.facts.cgroupControllers });
  }
  const exitCode = EXIT_CODES.setupFailed;
  log.error(
    { problems, exitCode, outcome: 'setupFailed', preflightMs: Date.now() - started },
    `this host cannot enforce the config (exit ${exitCode}; \`vmsandbox check\` reports the same; nothing was created): ${problems.join('; ')}`,
  );
  return exitCode;
}
