// JSON Schema (draft-07, what ajv 8's default class speaks) of the raw config v1 format, for
// editors and for `vmsandbox schema`. It is documentation as much as validation, hence a
// description on every property.
//
// parseConfig (config/load.ts) is the authority. Two of its rules are beyond draft-07 and are not
// here: service names must be unique, and at most one service may be the vmm (the schema does
// require at least one). test/config.test.ts checks that schema and loader agree on everything else.

import { LIMIT_KEYS, LIMIT_RULES } from './limits.js';
import {
  ALLOWED_CAPABILITIES, KERNEL_FS_PATTERN, TCP_PORT_MAX, CGROUP_PARENT_DEFAULT, CGROUP_PARENT_PATTERN, DEFAULT_STOP_SIGNAL, EXIT_POLICIES, ID_MAX,
  IDENTIFIER_PATTERN, LANDLOCK_ABI_DEFAULT, LANDLOCK_ABI_MAX, LANDLOCK_ABI_MIN, NETWORK_DEFAULT, NETWORK_MODES, READY_IMMEDIATE, STOP_SIGNALS, STORAGE_ACCESS,
  TIMEOUT_DEFAULTS, TIMEOUT_MAX_MS, TIMEOUT_MINIMUMS, TMPFS_DEFAULT_SIZE, TMPFS_SIZE_PATTERN,
} from './rules.js';
import { SECUREBIT_NAMES, SOCKET_FD_MAX, SOCKET_FD_MIN, SOCKET_MODE_DEFAULT, SOCKET_MODE_PATTERN } from './rules.js';
import { SECCOMP_DENIABLE } from '../plan/seccomp.js';

type Schema = Record<string, unknown>;

const described = (description: string, schema: Schema): Schema => ({ description, ...schema });

// An absolute path with no ".." segment and no NUL (the lookahead scans for "/.." as a segment).
const ABSOLUTE_PATH = '^(?![\\s\\S]*/\\.\\.(?:/|$))/[^\\u0000]*$';
// Some segment that is neither empty nor ".": the path does not normalize to "/".
const NOT_ROOT = '/(?!\\.(?:/|$))[^/]';
// After normalization the path starts with "/dev/" and names something below it.
const UNDER_DEV = '^/+(?:\\./+)*dev/+(?:\\./+)*(?!\\.(?:/|$))[^/]';
const NO_NUL = '^[^\\u0000]*$';

/** Names matched case-insensitively with an optional "CAP_" prefix, as the loader accepts them. */
function anyCase(word: string): string {
  return word.replace(/[A-Z]/g, (c) => `[${c}${c.toLowerCase()}]`);
}
const CAPABILITY = `^(?:${anyCase('CAP')}_)?(?:${ALLOWED_CAPABILITIES.map(anyCase).join('|')})$`;

const SECUREBIT_PATTERN = `^(?:${anyCase('SECBIT')}_)?(?:${SECUREBIT_NAMES.map(anyCase).join('|')})$`;

const absolutePath = (description: string): Schema => described(description, { type: 'string', pattern: ABSOLUTE_PATH });
const pathList = (description: string): Schema =>
  described(description, { type: 'array', items: absolutePath('An absolute path.'), default: [] });
const directory = (description: string): Schema =>
  described(description, { type: 'string', allOf: [{ pattern: ABSOLUTE_PATH }, { pattern: NOT_ROOT }, { not: { pattern: KERNEL_FS_PATTERN } }] });
const identifier = (description: string): Schema =>
  described(description, { type: 'string', pattern: IDENTIFIER_PATTERN });
const id = (description: string): Schema => described(description, { type: 'integer', minimum: 1, maximum: ID_MAX });

const commandLine = (description: string): Schema =>
  described(description, {
    type: 'array',
    minItems: 1,
    items: [absolutePath('The absolute path of the program (kept as written).')],
    additionalItems: described('An argument (no NUL characters).', { type: 'string', pattern: NO_NUL }),
  });

const limits = (description: string): Schema =>
  described(`${description} Allowed cgroup v2 files: ${LIMIT_KEYS.join(', ')}.`, {
    type: 'object',
    additionalProperties: false,
    default: {},
    properties: Object.fromEntries(
      LIMIT_KEYS.map((key) => {
        const rule = LIMIT_RULES[key];
        return [key, described(rule?.description ?? key, rule?.schema ?? {})];
      }),
    ),
  });

const tmpfs = (where: string): Schema =>
  described(
    `A private tmpfs on ${where}: true for ${TMPFS_DEFAULT_SIZE}, false for none, or a size like "16M" or "1G" ` +
      '(suffix K, M or G; zero is refused because tmpfs reads it as "no limit").',
    { anyOf: [{ type: 'boolean' }, { type: 'string', pattern: TMPFS_SIZE_PATTERN }], default: false },
  );

const stop = described(
  'How the vmm is asked to shut the VM down gracefully; only the vmm may set it. Exactly one key. ' +
    `Default {"signal": "${DEFAULT_STOP_SIGNAL}"}.`,
  {
    type: 'object',
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 1,
    properties: {
      signal: described('Send this signal to the vmm.', { type: 'string', enum: [...STOP_SIGNALS] }),
      qmp: absolutePath('Send QEMU\'s "system_powerdown" over the QMP socket at this path.'),
      cloudHypervisorApi: absolutePath('Ask cloud-hypervisor to shut down through its HTTP API socket at this path.'),
      command: commandLine('Run this command (argv, first element an absolute path) to request the shutdown.'),
    },
  },
);

const ready = described(
  'When the vmm counts as ready (what `vmsandbox run --notify-fd` reports to s6); only the vmm may set it. ' +
    `"${READY_IMMEDIATE}" (the default): once launched; or an object with exactly one key.`,
  {
    anyOf: [
      { type: 'string', const: READY_IMMEDIATE },
      {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        maxProperties: 1,
        properties: {
          socket: absolutePath('Ready once this path exists (a socket the vmm creates).'),
          qmp: absolutePath('Ready once a QMP greeting answers on the unix socket at this path.'),
        },
      },
    ],
    default: READY_IMMEDIATE,
  },
);

const service = described('A daemon of the VM, launched in its own sandbox.', {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'argv', 'uid', 'gid'],
  properties: {
    name: identifier('Service name, unique within the VM; names its cgroup leaf. Same rule as the VM name.'),
    argv: commandLine('Command line: the absolute path of the program, then its arguments. argv and env together at most 16384 bytes.'),
    env: described('Environment variables, the only ones the service gets.', {
      type: 'object',
      default: {},
      propertyNames: { pattern: '^[^=\\u0000]+$' },
      additionalProperties: { type: 'string', pattern: NO_NUL },
    }),
    uid: id(`User id the service runs as: 1 to ${ID_MAX}; root (0) is not allowed. Distinct per service is recommended.`),
    gid: id(`Primary group id: 1 to ${ID_MAX}; group 0 is not allowed.`),
    groups: described('Supplementary group ids (1 and up).', { type: 'array', items: id('A group id.'), default: [] }),
    vmm: described('True for the virtual machine monitor; exactly one service must be the vmm.', {
      type: 'boolean',
      default: false,
    }),
    storage: described('Access to the VM storage directory: none, read-only or read-write.', {
      type: 'string',
      enum: [...STORAGE_ACCESS],
      default: 'none',
    }),
    tmp: tmpfs('/tmp'),
    shm: tmpfs('/dev/shm'),
    landlock: described('Landlock filesystem rules of the service.', {
      type: 'object',
      additionalProperties: false,
      default: { read: [], write: [] },
      properties: {
        read: pathList('Paths the service may read.'),
        write: pathList('Paths the service may write.'),
        bindTcp: described('With network "host" on Landlock ABI ≥ 4: TCP ports the service may bind (every other is denied).', {
          type: 'array', items: { type: 'integer', minimum: 0, maximum: TCP_PORT_MAX },
        }),
        connectTcp: described('With network "host" on Landlock ABI ≥ 4: TCP ports the service may connect to (every other is denied).', {
          type: 'array', items: { type: 'integer', minimum: 0, maximum: TCP_PORT_MAX },
        }),
      },
    }),
    limits: limits('cgroup v2 limits of this service\'s leaf cgroup.'),
    caps: described(
      'Capabilities kept after dropping to uid, like "CAP_DAC_READ_SEARCH" (case-insensitive, CAP_ prefix optional). ' +
        'Refused, because each lets a service leave its sandbox: CAP_SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, SYS_BOOT, ' +
        'SYS_RESOURCE, MAC_OVERRIDE, MAC_ADMIN, PERFMON, BPF, CHECKPOINT_RESTORE.',
      { type: 'array', items: { type: 'string', pattern: CAPABILITY }, default: [] },
    ),
    devices: described('Host device nodes made available in the sandbox, e.g. "/dev/kvm".', {
      type: 'array',
      items: { type: 'string', allOf: [{ pattern: ABSOLUTE_PATH }, { pattern: UNDER_DEV }] },
      default: [],
    }),
    sockets: described(
      'Listening unix sockets the sandbox creates (in the runtime dir or a service\'s directory there) and ' +
        'hands to the service at fd numbers, like `virtiofsd --fd=3`. The socket file is owned by the service\'s uid.',
      {
        type: 'array',
        default: [],
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['path', 'fd'],
          properties: {
            path: absolutePath('Where the socket file is created (clients connect here).'),
            fd: described(`The fd number the service gets it at, ${SOCKET_FD_MIN} to ${SOCKET_FD_MAX}.`, {
              type: 'integer', minimum: SOCKET_FD_MIN, maximum: SOCKET_FD_MAX,
            }),
            mode: described('Permission bits of the socket file as an octal string; clients need write permission.', {
              type: 'string', pattern: SOCKET_MODE_PATTERN, default: SOCKET_MODE_DEFAULT,
            }),
            gid: id('Group of the socket file (default: the service\'s gid), e.g. the client service\'s gid with mode "0660".'),
            clients: described(
              'The services of this VM that see the socket at its path (each service sees only its own directory in the runtime dir, and the sockets it is a client of). Default: none.',
              { type: 'array', items: { type: 'string', pattern: IDENTIFIER_PATTERN }, uniqueItems: true, default: [] },
            ),
          },
        },
      },
    ),
    securebits: described(
      'Securebits set before the switch to uid (case-insensitive, SECBIT_ prefix optional), e.g. ' +
        '"SECBIT_NO_SETUID_FIXUP" for a daemon that changes its euid/fsuid per request and must keep its caps.',
      { type: 'array', items: { type: 'string', pattern: SECUREBIT_PATTERN }, default: [] },
    ),
    seccomp: described('The service\'s seccomp filter: allow by default, a fixed deny list (docs/threat-model.md).', {
      type: 'object',
      additionalProperties: false,
      default: { allow: [] },
      properties: {
        allow: described('Syscalls of the deny list this service may use after all, by name, e.g. "userfaultfd" for QEMU postcopy migration.', {
          type: 'array',
          items: { type: 'string', enum: [...SECCOMP_DENIABLE] },
          default: [],
        }),
      },
    }),
    stop,
    ready,
    onExit: described(
      'What happens when this service exits while the VM runs: stop the VM, or ignore it. The vmm must use "stop".',
      { type: 'string', enum: [...EXIT_POLICIES], default: 'stop' },
    ),
  },
  // Per-service rules that depend on `vmm`: only the vmm has a stop method and a readiness
  // condition, and it cannot be ignored.
  if: { type: 'object', properties: { vmm: { const: true } }, required: ['vmm'] },
  then: { type: 'object', properties: { onExit: { const: 'stop' } } },
  else: { type: 'object', properties: { stop: false, ready: false } },
});

const timeout = (key: keyof typeof TIMEOUT_DEFAULTS, description: string): Schema =>
  described(`${description} Milliseconds, ${TIMEOUT_MINIMUMS[key]} to ${TIMEOUT_MAX_MS}.`, {
    type: 'integer',
    minimum: TIMEOUT_MINIMUMS[key],
    maximum: TIMEOUT_MAX_MS,
    default: TIMEOUT_DEFAULTS[key],
  });

export const configSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'vmsandbox VM config (v1)',
  description:
    'The sandbox of one VM: its host daemons (services) and how they are confined. Not expressible here, ' +
    'checked by `vmsandbox check`: service names are unique, and exactly one service is the vmm.',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'storage', 'services'],
  properties: {
    name: identifier(
      'VM name: a lowercase letter, then up to 30 lowercase letters, digits or "-". Names the VM\'s cgroup and directories.',
    ),
    storage: directory('The VM\'s private storage directory: absolute, no ".." segments, not "/".'),
    runtimeDir: directory('Directory for sockets and runtime state. Default "/run/vmsandbox/<name>".'),
    timeouts: described('Deadlines of the sandbox lifecycle.', {
      type: 'object',
      additionalProperties: false,
      properties: {
        setupMs: timeout('setupMs', 'Deadline for building the sandbox and launching every service.'),
        stopMs: timeout('stopMs', 'How long the vmm gets to shut the VM down gracefully before everything is killed.'),
        killMs: timeout('killMs', 'How long killing everything may take before teardown is declared failed.'),
      },
    }),
    cgroup: described('Where the VM\'s cgroup lives and the limits on the whole VM.', {
      type: 'object',
      additionalProperties: false,
      properties: {
        parent: described(
          'Parent cgroup, relative to the cgroup root: segments of letters, digits, "_", "@", "." and "-" ' +
            '(not starting with ".") separated by "/".',
          { type: 'string', pattern: CGROUP_PARENT_PATTERN, default: CGROUP_PARENT_DEFAULT },
        ),
        limits: limits('cgroup v2 limits of the VM as a whole.'),
        limitsOptional: described(
          'If true, a limit whose controller is not enabled is skipped with a warning instead of failing setup.',
          { type: 'boolean', default: false },
        ),
      },
    }),
    landlock: described('Landlock requirements of the host kernel.', {
      type: 'object',
      additionalProperties: false,
      properties: {
        minAbi: described(`Lowest Landlock ABI version accepted, ${LANDLOCK_ABI_MIN} to ${LANDLOCK_ABI_MAX}.`, {
          type: 'integer',
          minimum: LANDLOCK_ABI_MIN,
          maximum: LANDLOCK_ABI_MAX,
          default: LANDLOCK_ABI_DEFAULT,
        }),
        allowDegraded: described(
          'If true, run with the protections an older kernel offers instead of refusing to start.',
          { type: 'boolean', default: false },
        ),
      },
    }),
    network: described(
      'The network the services see. "none" (the default): a network namespace of the VM\'s own with only its ' +
        'loopback up (no route anywhere, not to the host\'s loopback nor to other VMs). "host": the host\'s network ' +
        'namespace, with everything it exposes (its interfaces, services listening on its loopback, other VMs\' ' +
        'listeners, socket diagnostics of the host).',
      { type: 'string', enum: [...NETWORK_MODES], default: NETWORK_DEFAULT },
    ),
    services: described('The VM\'s daemons, launched in order with the vmm last. Exactly one has "vmm": true.', {
      type: 'array',
      minItems: 1,
      items: service,
      contains: { type: 'object', properties: { vmm: { const: true } }, required: ['vmm'] },
    }),
  },
} as const;
