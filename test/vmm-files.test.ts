// The files a VMM's command line names (config/vmmFiles.ts), which `check` holds against the
// vmm's Landlock rules.

import { describe, expect, it } from 'vitest';
import { vmmFiles, vmmKind } from '../config/vmmFiles.js';

describe('files named on a VMM command line', () => {
  it('QEMU: -kernel, -initrd, -bios, -dtb read; -drive file= read-only or written; -serial file: and -pidfile written', () => {
    const argv = [
      '/usr/bin/qemu-system-x86_64', '-machine', 'q35', '-kernel', '/var/lib/g/vmlinux', '-initrd', '/var/lib/g/initrd.img',
      '-drive', 'if=virtio,file=/var/lib/vm/disk,,1.img,format=raw', '-drive', 'file=/srv/iso,readonly=on',
      '-blockdev', 'driver=file,filename=/srv/b.img,read-only=on,node-name=b', '-serial', 'file:/run/vm/vmm/console.log',
      '-pidfile', '/run/vm/vmm/pid', '-append', 'console=ttyS0', '-kernel-irqchip', 'relative/path', '-bios', 'relative.bin',
    ];
    expect(vmmKind(argv)).toBe('qemu');
    expect(vmmFiles(argv)).toEqual([
      { arg: 4, path: '/var/lib/g/vmlinux', access: 'read', option: '-kernel' },
      { arg: 6, path: '/var/lib/g/initrd.img', access: 'read', option: '-initrd' },
      { arg: 8, path: '/var/lib/vm/disk,1.img', access: 'write', option: '-drive file=' },
      { arg: 10, path: '/srv/iso', access: 'read', option: '-drive file=' },
      { arg: 12, path: '/srv/b.img', access: 'read', option: '-blockdev filename=' },
      { arg: 14, path: '/run/vm/vmm/console.log', access: 'write', option: '-serial file:' },
      { arg: 16, path: '/run/vm/vmm/pid', access: 'write', option: '-pidfile' },
    ]);
  });

  it('cloud-hypervisor: --kernel, --initramfs read; every --disk path= until the next option', () => {
    const argv = ['/usr/bin/cloud-hypervisor', '--kernel', '/g/vmlinux', '--disk', 'path=/d/root.img', 'path=/d/ro.img,readonly=on', '--serial', 'file=/run/vm/vmm/serial', '--cpus', 'boot=1'];
    expect(vmmKind(argv)).toBe('cloud-hypervisor');
    expect(vmmFiles(argv)).toEqual([
      { arg: 2, path: '/g/vmlinux', access: 'read', option: '--kernel' },
      { arg: 4, path: '/d/root.img', access: 'write', option: '--disk path=' },
      { arg: 5, path: '/d/ro.img', access: 'read', option: '--disk path=' },
      { arg: 7, path: '/run/vm/vmm/serial', access: 'write', option: '--serial file=' },
    ]);
  });

  it('another program: nothing is judged', () => {
    expect(vmmKind(['/bin/sleep', '-kernel', '/x'])).toBeNull();
    expect(vmmFiles(['/bin/sleep', '-kernel', '/x'])).toEqual([]);
  });
});
