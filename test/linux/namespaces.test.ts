// The VM's own IPC and network namespaces (plan/index.ts planNamespaces, native/shim.c): attacks
// from a service on SysV IPC and the network, each next to a positive control showing the same
// probe succeeds where the access exists (a sibling in the same VM, the host's own namespace, or a
// VM that keeps the host's network with `network: "host"`). Probes are /bin/sh scripts using
// util-linux's ipcmk/ipcs and perl's IO::Socket::INET; they write what they saw to their own
// runtime directory.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { start, stop, type Run } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, service, SLEEPER, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

const tools = ['/usr/bin/ipcmk', '/usr/bin/ipcs', '/usr/bin/ipcrm', '/usr/bin/perl', '/usr/bin/nsenter'];
const missing = tools.filter((t) => !existsSync(t));
const perlSocket = spawnSync('/usr/bin/perl', ['-MIO::Socket::INET', '-e', '1']).status === 0;
const skip =
  skipReason() ??
  (missing.length ? `missing ${missing.join(', ')} (util-linux, perl)` : null) ??
  (perlSocket ? null : "perl's IO::Socket::INET does not load");
if (skip) console.warn(`test/linux/namespaces skipped: ${skip}`);

/** A probe reads /proc (ipcs reads /proc/sysvipc, the socket tables are /proc/net/*) and the system. */
const PROBE_READ = { read: [...SYSTEM_READ, '/proc'], write: [] };

/** sh: connect to 127.0.0.1:$1, print `<label> connected <greeting>` or `<label> failed <strerror>`. */
const connectTo = (label: string, port: number, tries = 1) =>
  `perl -MIO::Socket::INET -e '
     for my $i (1..${tries}) {
       my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => ${port}, Proto => "tcp", Timeout => 3);
       if ($s) { my $g = <$s>; $g =~ s/\\s+$//; print "${label} connected $g\\n"; exit 0 }
       if ($i == ${tries}) { print "${label} failed $!\\n"; exit 0 }
       select(undef, undef, undef, 0.05);
     }'`;

/** sh: listen on 127.0.0.1:$port and greet every client with `hello from <vm>`, forever. */
const listenOn = (port: number, vm: string) =>
  `exec perl -MIO::Socket::INET -e '
     my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => ${port}, Listen => 8, Proto => "tcp", ReuseAddr => 1)
       or do { print "listen failed $!\\n"; exit 1 };
     $| = 1; print "listening\\n";
     while (my $c = $l->accept) { print $c "hello from ${vm}\\n"; close $c }'`;

interface Started {
  vm: TestVm;
  run: Run;
}

describe('linux backend: a VM has its own IPC and network namespaces', () => {
  const vms: TestVm[] = [];
  const runs: Run[] = [];
  const servers: Server[] = [];
  const scratch: string[] = [];
  afterEach(async () => {
    for (const r of runs.splice(0)) {
      if (r.actor.getSnapshot().status !== 'done') await stop(r).catch(() => undefined);
    }
    for (const v of vms.splice(0)) forceCleanup(v);
    for (const s of servers.splice(0)) s.close();
    for (const d of scratch.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  afterAll(() => {
    if (!skip) removeTestParents();
  });

  /** Start a VM of `services` and a sleeping vmm; each service writes to `<runtimeDir>/<name>/out`. */
  function startVm(services: (vm: TestVm) => ServiceConfig[], over: Partial<VmConfig> = {}): Started {
    const vm = newTestVm();
    vms.push(vm);
    const run = start(vmConfig(vm, [...services(vm), SLEEPER], over), vm);
    runs.push(run);
    return { vm, run };
  }

  /** A service running `script` with its stdout and stderr in `<runtimeDir>/<name>/out`. */
  function probe(vm: TestVm, name: string, script: string, over: Partial<ServiceConfig> = {}): ServiceConfig {
    return service({
      name,
      argv: ['/bin/sh', '-c', `exec >${outPath(vm, name)} 2>&1\n${script}`],
      landlock: PROBE_READ,
      ...over,
    });
  }
  const outPath = (vm: TestVm, name: string) => `${vm.runtimeDir}/${name}/out`;
  const readOut = (vm: TestVm, name: string) => (existsSync(outPath(vm, name)) ? readFileSync(outPath(vm, name), 'utf8') : '');

  /** Wait until a service's output matches `re` (the run must not fail meanwhile); return the output. */
  async function outputOf(s: Started, name: string, re: RegExp, ms = 10_000): Promise<string> {
    await s.run.waitFor('running');
    const ok = await until(() => re.test(readOut(s.vm, name)), ms, 20);
    const out = readOut(s.vm, name);
    expect(ok, `${s.vm.name}/${name} should print ${re}, printed:\n${out}`).toBe(true);
    return out;
  }

  async function finish(s: Started): Promise<void> {
    const output = await stop(s.run);
    expect(output).toMatchObject({ outcome: 'stopped' });
    expect(leftovers(s.vm)).toEqual([]);
  }

  const nsOf = (pid: number, ns: 'ipc' | 'net') => readlinkSync(`/proc/${pid}/ns/${ns}`);
  const initPid = (s: Started) => {
    const pid = s.run.backend.state.initPid;
    if (pid === null) throw new Error(`${s.vm.name}: no init pid`);
    return pid;
  };
  /** Host pids whose namespace of this kind is `ns` (readlink form, `ipc:[4026532…]`). */
  const holders = (kind: 'ipc' | 'net', ns: string) =>
    readdirSync('/proc').filter((d) => /^\d+$/.test(d) && readlinkSafe(`/proc/${d}/ns/${kind}`) === ns);

  /** Keys (0x…) of the message queues or shm segments in `ipcs` output. */
  const ipcKeys = (out: string) => [...out.matchAll(/^(0x[0-9a-f]{8})\s+\d+\s/gm)].map((m) => m[1]!).filter((k) => k !== '0x00000000');

  /** sh: make a message queue and a shm segment (mode 0666: no permission stands in the way), list them. */
  const makeIpc = `ipcmk -Q -p 0666 && ipcmk -M 4096 -p 0666 || exit 1
    echo '-- mine'; ipcs -q; ipcs -m; echo '-- made'; exec sleep 1000`;
  /** sh: wait until at least one queue is visible (or 2 s), then list queues and segments. */
  const seeIpc = `for i in $(seq 40); do ipcs -q | grep -q '^0x' && break; sleep 0.05; done
    echo '-- seen'; ipcs -q; ipcs -m; echo '-- done'`;

  it.skipIf(skip)('the init gets its own IPC and network namespaces; with network "host" only the IPC one', async () => {
    const a = startVm((vm) => [probe(vm, 'p', 'echo up; exec sleep 1000')]);
    const b = startVm((vm) => [probe(vm, 'p', 'echo up; exec sleep 1000')], { network: 'host' });
    await outputOf(a, 'p', /up/);
    await outputOf(b, 'p', /up/);
    expect(nsOf(initPid(a), 'ipc')).not.toBe(nsOf(process.pid, 'ipc'));
    expect(nsOf(initPid(a), 'net')).not.toBe(nsOf(process.pid, 'net'));
    expect(nsOf(initPid(b), 'ipc')).not.toBe(nsOf(process.pid, 'ipc'));
    expect(nsOf(initPid(b), 'ipc')).not.toBe(nsOf(initPid(a), 'ipc'));
    expect(nsOf(initPid(b), 'net')).toBe(nsOf(process.pid, 'net'));
    // The backend and the plan agree on what was cloned (the record line plan-equivalence compares).
    expect(a.run.backend.executed).toContain(`init clone into vmsandbox-test/${a.vm.name}/init ns pid,mnt,ipc,net lo up`);
    expect(b.run.backend.executed).toContain(`init clone into vmsandbox-test/${b.vm.name}/init ns pid,mnt,ipc`);
    await finish(a);
    await finish(b);
  });

  it.skipIf(skip)(
    'SysV IPC: a queue and a segment made in VM A are seen by A\'s other service (control) but not by VM B nor the host, and are gone with A',
    async () => {
      // The host's own queue: the host sees it (control: ipcs shows a queue where it exists).
      const hostMade = spawnSync('/usr/bin/ipcmk', ['-Q', '-p', '0666'], { encoding: 'utf8' });
      expect(hostMade.status, hostMade.stderr).toBe(0);
      const hostQid = /id: (\d+)/.exec(hostMade.stdout)?.[1];
      try {
        const hostKeys = ipcKeys(spawnSync('/usr/bin/ipcs', ['-q'], { encoding: 'utf8' }).stdout);
        expect(hostKeys.length).toBeGreaterThan(0);

        const a = startVm((vm) => [
          probe(vm, 'maker', makeIpc),
          // Another uid in the same VM: the same IPC namespace, so it sees the maker's objects.
          probe(vm, 'peer', seeIpc, { uid: 62002, gid: 62002 }),
        ]);
        const made = await outputOf(a, 'maker', /-- made/);
        const aKeys = ipcKeys(made);
        expect(aKeys, made).toHaveLength(2); // the queue and the segment
        const peer = await outputOf(a, 'peer', /-- done/);
        for (const k of aKeys) expect(peer).toContain(k);
        for (const k of hostKeys) expect(peer).not.toContain(k);

        // VM B, running at the same time, sees neither A's objects nor the host's.
        const b = startVm((vm) => [probe(vm, 'peer', seeIpc)]);
        const seen = await outputOf(b, 'peer', /-- done/);
        expect(seen).toMatch(/Message Queues/); // ipcs ran and listed (nothing)
        expect(ipcKeys(seen)).toEqual([]);

        // The host does not see A's objects either.
        const host = spawnSync('/usr/bin/ipcs', [], { encoding: 'utf8' }).stdout;
        for (const k of aKeys) expect(host).not.toContain(k);
        // They exist, in A's IPC namespace (entered through its init).
        const ipcNs = nsOf(initPid(a), 'ipc');
        const inA = spawnSync('/usr/bin/nsenter', [`--ipc=/proc/${initPid(a)}/ns/ipc`, '/usr/bin/ipcs'], { encoding: 'utf8' });
        expect(inA.status, inA.stderr).toBe(0);
        for (const k of aKeys) expect(inA.stdout).toContain(k);

        // Once A stops nothing holds its IPC namespace: the kernel frees it with its objects.
        expect(holders('ipc', ipcNs).length).toBeGreaterThan(0);
        await finish(a);
        expect(holders('ipc', ipcNs)).toEqual([]);
        const after = spawnSync('/usr/bin/ipcs', [], { encoding: 'utf8' }).stdout;
        for (const k of aKeys) expect(after).not.toContain(k);
        await finish(b);
      } finally {
        if (hostQid) spawnSync('/usr/bin/ipcrm', ['-q', hostQid]);
      }
    },
  );

  /** A TCP listener on the host's 127.0.0.1 counting its clients, and a unix socket bound on the host. */
  async function hostListeners(): Promise<{ port: number; accepted: () => number; unixPath: string }> {
    let n = 0;
    const tcp = createServer((c) => {
      n++;
      c.end('hello from the host\n');
    });
    servers.push(tcp);
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const dir = mkdtempSync('/tmp/vmsandbox-netdiag-');
    scratch.push(dir);
    const unixPath = join(dir, 'host-diag.sock');
    const unix = createServer(() => undefined);
    servers.push(unix);
    await new Promise<void>((r) => unix.listen(unixPath, r));
    const addr = tcp.address();
    if (!addr || typeof addr === 'string') throw new Error('no port');
    return { port: addr.port, accepted: () => n, unixPath };
  }

  /** sh: connect to the host's listener, then list the TCP and unix sockets this namespace shows. */
  const hostProbe = (port: number) => `${connectTo('host', port)}
    echo '-- tcp'; cat /proc/net/tcp; echo '-- unix'; cat /proc/net/unix; echo '-- links'; ls /sys/class/net; echo '-- done'`;
  /** The host probe also reads /sys (the network devices of its namespace, in the VM's fresh sysfs). */
  const hostProbeRules = { landlock: { read: [...PROBE_READ.read, '/sys'], write: [] } };
  const portHex = (port: number) => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;

  it.skipIf(skip)(
    'network: a service reaches nothing on the host\'s loopback and lists none of its sockets; with network "host" it does (control)',
    async () => {
      const host = await hostListeners();
      const none = startVm((vm) => [probe(vm, 'p', hostProbe(host.port), hostProbeRules)]);
      const out = await outputOf(none, 'p', /-- done/);
      // Its 127.0.0.1 is its own loopback (up, so refused rather than unreachable) where nothing listens.
      expect(out).toMatch(/^host failed Connection refused$/m);
      expect(host.accepted()).toBe(0);
      expect(out).not.toContain(portHex(host.port));
      expect(out).not.toContain(host.unixPath);
      // Its only network device is its loopback.
      expect(/-- links\n([\s\S]*)-- done/.exec(out)?.[1]?.trim().split(/\s+/)).toEqual(['lo']);
      await finish(none);

      // With the host's network, Landlock's TCP rules still deny the connect: no port is granted.
      const denied = startVm((vm) => [probe(vm, 'p', hostProbe(host.port), hostProbeRules)], { network: 'host' });
      expect(await outputOf(denied, 'p', /-- done/)).toMatch(/^host failed Permission denied$/m);
      expect(host.accepted()).toBe(0);
      await finish(denied);

      // Control: the same probe with the host's network and the port granted (landlock.connectTcp)
      // reaches the listener and lists both sockets.
      const granted = { landlock: { ...hostProbeRules.landlock, connectTcp: [host.port] } };
      const kept = startVm((vm) => [probe(vm, 'p', hostProbe(host.port), granted)], { network: 'host' });
      const outHost = await outputOf(kept, 'p', /-- done/);
      expect(outHost).toMatch(/^host connected hello from the host$/m);
      expect(host.accepted()).toBe(1);
      expect(outHost).toContain(portHex(host.port));
      expect(outHost).toContain(host.unixPath);
      await finish(kept);
    },
  );

  it.skipIf(skip)(
    'network: loopback works inside a VM (a sibling connects), another VM cannot reach it; two VMs on the host network can (control)',
    async () => {
      // A port unlikely to be in use on the host (the control binds it in the host's namespace).
      const port = 20000 + Math.floor(Math.random() * 30000);
      // On the host's network the ports must be granted (Landlock TCP rules); in a VM's own network
      // namespace they are not handled (nothing but its loopback to reach).
      const tcp = (network: 'none' | 'host', rule: 'bindTcp' | 'connectTcp') =>
        network === 'host' ? { landlock: { read: PROBE_READ.read, write: [], [rule]: [port] } } : {};
      const pair = (network: 'none' | 'host') => {
        const server = startVm(
          (vm) => [
            probe(vm, 'listener', listenOn(port, vm.name), tcp(network, 'bindTcp')),
            probe(vm, 'client', connectTo('sibling', port, 60), { uid: 62002, gid: 62002, ...tcp(network, 'connectTcp') }),
          ],
          { network },
        );
        return server;
      };
      const attacker = (network: 'none' | 'host') =>
        startVm((vm) => [probe(vm, 'p', `${connectTo('other-vm', port)}\necho '-- done'`, tcp(network, 'connectTcp'))], { network });

      const b = pair('none');
      const sibling = await outputOf(b, 'client', /^sibling /m);
      expect(sibling).toMatch(new RegExp(`^sibling connected hello from ${b.vm.name}$`, 'm'));
      const a = attacker('none');
      const out = await outputOf(a, 'p', /-- done/);
      expect(out).toMatch(/^other-vm failed Connection refused$/m);
      await finish(a);
      await finish(b);

      // Control: both VMs keep the host's network, and the same probe reaches the other VM's listener.
      const hb = pair('host');
      expect(await outputOf(hb, 'client', /^sibling /m)).toMatch(new RegExp(`^sibling connected hello from ${hb.vm.name}$`, 'm'));
      const ha = attacker('host');
      expect(await outputOf(ha, 'p', /-- done/)).toMatch(new RegExp(`^other-vm connected hello from ${hb.vm.name}$`, 'm'));
      await finish(ha);
      await finish(hb);
    },
  );
});

function readlinkSafe(p: string): string | null {
  try {
    return readlinkSync(p);
  } catch {
    return null;
  }
}
