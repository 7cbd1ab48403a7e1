#!/usr/bin/env node
// Generates the sandbox config of the real VM (docs/vm.md): QEMU + the C virtiofsd from Debian's
// qemu-system-x86, booting the guest that guest/build.sh caches outside the repo. Generated, not
// hand-written, because the guest's path is in the cache and KVM is used only where it works.
//
//   node examples/vm/make-config.mjs [--name vm] [--storage DIR] [--runtime-dir DIR] [--guest DIR]
//        [--accel auto|kvm|tcg] [--ignore-power-button] [--stop-ms N] [--cgroup-parent P]
//        [--memory MiB] [--out FILE]
//
// Plain JavaScript (no build step) so an operator can run it anywhere Node runs.

import { existsSync, realpathSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const QEMU = '/usr/bin/qemu-system-x86_64';
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
export const DEFAULT_GUEST = '/var/cache/vmsandbox-guest/current';

/**
 * KVM is usable when /dev/kvm exists and is not kvm_pvm's: on these machines (themselves VMs
 * without vmx/svm) kvm_pvm provides /dev/kvm, and stock guest kernels crash or crawl under it.
 */
export function kvmUsable() {
  return existsSync('/dev/kvm') && !existsSync('/sys/module/kvm_pvm');
}

/** The raw (JSON) config; `vmsandbox check` / loadConfig validate it. */
export function makeVmConfig(o = {}) {
  const name = o.name ?? 'vm';
  const storage = o.storage ?? `/var/lib/vmsandbox/${name}`;
  const rt = o.runtimeDir ?? `/run/vmsandbox/${name}`;
  const guest = existsSync(o.guest ?? DEFAULT_GUEST) ? realpathSync(o.guest ?? DEFAULT_GUEST) : (o.guest ?? DEFAULT_GUEST);
  const accel = (o.accel ?? 'auto') === 'auto' ? (kvmUsable() ? 'kvm' : 'tcg') : o.accel;
  const memory = o.memoryMiB ?? 256;
  const uids = o.uids ?? { virtiofsd: 62011, vmm: 62012 };
  const fsSock = `${rt}/virtiofsd.sock`;
  const qmp = `${rt}/vmm/qmp.sock`;
  const append = ['console=ttyS0', 'panic=-1', ...(o.ignorePowerButton ? ['vmsandbox.ignore_powerbutton'] : [])];
  const system = ['/usr', '/lib', '/lib64', '/etc/ld.so.cache'];
  return {
    name,
    storage,
    runtimeDir: rt,
    timeouts: { setupMs: 30000, stopMs: o.stopMs ?? 10000, killMs: 3000 },
    ...(o.cgroupParent ? { cgroup: { parent: o.cgroupParent } } : {}),
    services: [
      {
        name: 'virtiofsd',
        argv: [
          VIRTIOFSD,
          '--fd=3', // the listening socket the sandbox created (sockets[0]): no socket-path races, no lock file
          '-o', `source=${storage}`,
          '-o', 'cache=none', // bounds what a guest can pin in the host's page cache
          '-o', 'sandbox=chroot', // QEMU 7.2's virtiofsd has no sandbox=none; namespace would need CAP_SYS_ADMIN
          '-o', 'modcaps=-mknod:-setfcap', // so it does not ask for caps it is not given
          '--rlimit-nofile=0', // leave RLIMIT_NOFILE alone (raising it needs CAP_SYS_RESOURCE)
          '-o', 'log_level=warn',
        ],
        uid: uids.virtiofsd,
        gid: uids.virtiofsd,
        storage: 'rw',
        sockets: [{ path: fsSock, fd: 3, mode: '0660', gid: uids.vmm, clients: ['vmm'] }], // only QEMU sees it
        // It acts for arbitrary guest uids: changes euid/fsuid per request and keeps its caps across
        // that (securebit), chroots into the storage, and needs setpcap or it dies "Bad system call".
        caps: ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_SETUID', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_SYS_CHROOT'],
        securebits: ['SECBIT_NO_SETUID_FIXUP'],
        landlock: { read: [...system, '/proc'], write: [] },
        onExit: 'stop',
      },
      {
        name: 'vmm',
        vmm: true,
        argv: [
          QEMU,
          '-machine', `q35,accel=${accel},memory-backend=mem`,
          ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
          '-smp', '1',
          '-m', `${memory}M`,
          '-object', `memory-backend-memfd,id=mem,size=${memory}M,share=on`, // vhost-user needs shared guest memory
          '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
          '-kernel', `${guest}/vmlinux`, // uncompressed: PVH entry, much faster than bzImage under TCG
          '-initrd', `${guest}/initrd.img`,
          '-append', append.join(' '),
          '-chardev', `socket,id=fs0,path=${fsSock}`,
          '-device', 'vhost-user-fs-pci,chardev=fs0,tag=shared',
          '-serial', `file:${rt}/vmm/console.log`,
          '-qmp', `unix:${qmp},server=on,wait=off`,
        ],
        uid: uids.vmm,
        gid: uids.vmm,
        landlock: { read: [...system, guest], write: [] },
        devices: accel === 'kvm' ? ['/dev/kvm'] : [],
        stop: { qmp },
      },
    ],
  };
}

function parseArgs(argv) {
  const o = {};
  let out = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--name') o.name = next();
    else if (a === '--storage') o.storage = next();
    else if (a === '--runtime-dir') o.runtimeDir = next();
    else if (a === '--guest') o.guest = next();
    else if (a === '--accel') o.accel = next();
    else if (a === '--ignore-power-button') o.ignorePowerButton = true;
    else if (a === '--stop-ms') o.stopMs = Number(next());
    else if (a === '--cgroup-parent') o.cgroupParent = next();
    else if (a === '--memory') o.memoryMiB = Number(next());
    else if (a === '--out') out = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.accel && !['auto', 'kvm', 'tcg'].includes(o.accel)) throw new Error('--accel must be auto, kvm or tcg');
  return { o, out };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    const { o, out } = parseArgs(process.argv.slice(2));
    const text = JSON.stringify(makeVmConfig(o), null, 2) + '\n';
    if (out) writeFileSync(out, text);
    else process.stdout.write(text);
  } catch (e) {
    process.stderr.write(`make-config: ${e.message}\n`);
    process.exit(2);
  }
}
