#!/usr/bin/env node
// A stand-in VMM for the demo and the s6 tests (QEMU is not installed everywhere): it behaves like
// `qemu-system-x86_64 -qmp unix:PATH,server=on,wait=off` as far as vmsandbox can tell. It listens on
// a QMP unix socket, greets every client, answers qmp_capabilities, query-status and quit, and on
// system_powerdown "shuts the guest down": exits 0 after --powerdown-ms (like a guest's ACPI power
// button handler, then QEMU exiting). Plain node, no dependencies: it runs as the vmm's uid under
// the vmm's Landlock rules (read access to node and to this file is all it needs).
//
// usage: fake-vmm.mjs --qmp PATH [--powerdown-ms MS] [--ignore-powerdown] [--boot-ms MS] [--arm-ms MS] [--qmp-gone-ms MS]
//   --boot-ms          wait this long before the QMP socket appears (default 300: "booting")
//   --ignore-powerdown answer system_powerdown but never exit (a guest without a power-button handler)
//   --arm-ms           the guest arms its power button this long after the start (default 0): a
//                      system_powerdown before that is answered but dropped, as a booting guest drops it
//   --qmp-gone-ms      once shutting down, close and remove the QMP socket this long before exiting
//                      (default 0), so a request in that window gets ENOENT, as from an exiting QEMU

import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    qmp: { type: 'string' },
    'powerdown-ms': { type: 'string', default: '150' },
    'boot-ms': { type: 'string', default: '300' },
    'ignore-powerdown': { type: 'boolean', default: false },
    'arm-ms': { type: 'string', default: '0' },
    'qmp-gone-ms': { type: 'string', default: '0' },
  },
});
const startedAt = Date.now();
let powerdowns = 0;
if (!values.qmp) {
  process.stderr.write('usage: fake-vmm.mjs --qmp PATH [--powerdown-ms MS] [--ignore-powerdown] [--boot-ms MS] [--arm-ms MS] [--qmp-gone-ms MS]\n');
  process.exit(2);
}
const say = (msg) => process.stdout.write(`fake-vmm[${process.pid}]: ${msg}\n`);
const greeting = { QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'vmsandbox fake-vmm' }, capabilities: ['oob'] } };
let poweringDown = false;

const server = createServer((conn) => {
  conn.setEncoding('utf8');
  conn.write(`${JSON.stringify(greeting)}\r\n`);
  let buf = '';
  let negotiated = false;
  const reply = (obj) => conn.write(`${JSON.stringify(obj)}\r\n`);
  conn.on('error', () => undefined);
  conn.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let cmd;
      try {
        cmd = JSON.parse(line);
      } catch {
        reply({ error: { class: 'GenericError', desc: 'JSON parse error' } });
        continue;
      }
      const name = cmd.execute;
      if (name === 'qmp_capabilities') {
        negotiated = true;
        reply({ return: {} });
      } else if (!negotiated) {
        reply({ error: { class: 'CommandNotFound', desc: 'Expecting capabilities negotiation with \'qmp_capabilities\'' } });
      } else if (name === 'query-status') {
        reply({ return: { status: poweringDown ? 'shutdown' : 'running', running: !poweringDown } });
      } else if (name === 'system_powerdown') {
        reply({ return: {} });
        powerdowns++;
        const sinceStart = Date.now() - startedAt;
        if (values['ignore-powerdown']) {
          say('system_powerdown received: ignored (this guest has no power button handler)');
        } else if (sinceStart < Number(values['arm-ms'])) {
          say(`system_powerdown #${powerdowns} received ${sinceStart} ms after start: dropped (the guest arms its power button at ${values['arm-ms']} ms)`);
        } else if (poweringDown) {
          say(`system_powerdown #${powerdowns} received: already shutting down`);
        } else {
          poweringDown = true;
          say(`system_powerdown received: guest shutting down, exiting in ${values['powerdown-ms']} ms (request #${powerdowns}, ${sinceStart} ms after start)`);
          reply({ event: 'POWERDOWN', timestamp: now() });
          const gone = Number(values['qmp-gone-ms']);
          if (gone > 0) {
            setTimeout(() => {
              server.close();
              rmSync(values.qmp, { force: true });
              say(`QMP socket closed and removed, ${gone} ms before exiting`);
            }, Math.max(0, Number(values['powerdown-ms']) - gone));
          }
          setTimeout(() => {
            say('guest powered off: exiting 0');
            process.exit(0);
          }, Number(values['powerdown-ms']));
        }
      } else if (name === 'quit') {
        reply({ return: {} });
        say('quit: exiting 0');
        process.exit(0);
      } else {
        reply({ error: { class: 'CommandNotFound', desc: `The command ${name} has not been found` } });
      }
    }
  });
});

function now() {
  const t = Date.now();
  return { seconds: Math.floor(t / 1000), microseconds: (t % 1000) * 1000 };
}

server.on('error', (e) => {
  say(`QMP socket ${values.qmp}: ${e.message}`);
  process.exit(1);
});
say(`booting (stand-in for QEMU; QMP on ${values.qmp} in ${values['boot-ms']} ms)`);
setTimeout(() => {
  rmSync(values.qmp, { force: true });
  server.listen(values.qmp, () => say(`QMP listening on ${values.qmp}`));
}, Number(values['boot-ms']));
