// How much of a service's output the manager takes (docs/linux-backend.md, "Service output").
// Policy: the init only cuts at the line length it is given (the spawn's `outline=`), and the
// manager's backend (effects/linux/output.ts) drops what exceeds the rate.

export const SERVICE_OUTPUT = {
  /** A longer line is cut here by the init and its record marked `cut: true` (the rest is dropped). */
  lineBytes: 4096,
  /** Lines per second and service (stdout and stderr together) logged; the rest are counted and dropped. */
  linesPerSecond: 1000,
} as const;
