// vmsandbox demo: the built-in demo config's whole lifecycle, logged as the manager logs it.
// It runs in the simulator (virtual time) until the Linux backend drives the real one.

import { demoConfigPath } from '../config/demo.js';
import { loadConfig } from '../config/load.js';
import { simulate } from '../sim/run.js';
import { demoPlan } from '../sim/demoPlan.js';
import { createLogger, logTransition } from './log.js';

export async function demoMain(_argv: string[]): Promise<number> {
  const config = loadConfig(demoConfigPath);
  const log = createLogger(config.name);
  log.info({ config: demoConfigPath, backend: 'simulator' }, `demo: ${config.name} with ${config.services.length} services, in the simulator (virtual time); s6 stops it at t=3000 ms`);
  let errors = 0;
  const r = await simulate(0, {
    config,
    plan: demoPlan,
    onRecord: (rec, at) => {
      logTransition(log, rec, errors, { vt: at });
      errors = rec.errors;
    },
  });
  const out = r.output;
  log.info({ outcome: out?.outcome, exitCode: out?.exitCode, invariants: r.ok ? 'hold' : r.violations }, `demo finished: ${r.finalState}, outcome ${out?.outcome}, exit ${out?.exitCode}; invariants ${r.ok ? 'hold' : 'VIOLATED'}`);
  return r.ok ? 0 : 1;
}
