// How much of a service's output the manager takes (docs/linux-backend.md, "Service output").
// Policy: the init cuts at the line length it is given (the spawn's `outline=`) and forwards at
// most the rate it is given (`outrate=`), counting the rest; the manager's backend
// (effects/linux/output.ts) keeps a second, looser bound.

export const SERVICE_OUTPUT = {
  /** A longer line is cut here by the init and its record marked `cut: true` (the rest is dropped). */
  lineBytes: 4096,
  /**
   * Lines per second and service (stdout and stderr together) the init forwards (`outrate=`): a
   * line over it in a one-second window is counted and dropped in the init, never sent to the
   * manager; the count is reported once the window has ended.
   */
  linesPerSecond: 1000,
  /**
   * The manager's own bound, per service and one-second window of its own: twice the init's, as
   * the two windows do not line up (an init window's lines may arrive in two of the manager's).
   */
  managerLinesPerSecond: 2000,
} as const;
