/** Poll `cond` every `stepMs` until it holds or `ms` pass; the last answer is returned. */
export async function until(cond: () => boolean, ms: number, stepMs = 5): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}
