// Simulated failures are values the machine reacts to, not bugs to debug: they need no stack
// trace, and capturing one (about 2 µs) was the largest cost of a failing effect.

export function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
