// The page in a real (headless) chromium: a live simulated sandbox, a state change within a second,
// each service's output as it comes, and replays of a failing seed's trace and of a hand-made trace, stepped and scrubbed.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { machineGraph } from '../../visualizer/graph.js';
import { toSvg } from '../../visualizer/graphSvg.js';
import { startInspector, type Inspector } from '../../visualizer/inspect.js';
import { parseSimTrace } from '../../visualizer/replay.js';
import { sandboxMachine } from '../../machines/sandbox.js';
import { chromiumSkipReason, launchChromium, outDir, repoRoot, SimulatedSandbox, tempRoot } from './helpers.js';

const skip = chromiumSkipReason();
if (skip) console.warn(`test/visualizer/browser skipped: ${skip}`);

const quiet = pino({ level: 'silent' });
const FAILING_SEED = 5; // ends failed/setupFailed: prepareLandlock fails with E2BIG

const HAND_TRACE = `plan {"seed":777,"fail":{"op":"requestStop","call":1,"errno":"ECONNREFUSED"},"stopAt":[40]}
000000 state setup.setupNamespaces <- xstate.init
000001 state setup.mount <- xstate.done.actor.createNamespaces
000004 state setup.landlock <- xstate.done.actor.mount
000005 state setup.cgroup <- xstate.done.actor.prepareLandlock
000006 state setup.launch <- xstate.done.actor.createCgroups
000008 state setup.launched <- xstate.done.actor.launch
000008 state running <- xstate.done.actor.launch
000040 event STOP_REQUESTED
000040 state gracefulStop.vmm.requesting <- STOP_REQUESTED (SIGTERM)
000041 state teardown.kill <- xstate.error.actor.requestStop (stop request failed: requestStop: ECONNREFUSED (qmp))
000043 kernel: SIGKILL -> vmsandbox-init[300]
000044 state teardown.cleanup <- xstate.done.actor.killAll
000046 state failed <- xstate.done.actor.cleanup
000046 end failed outcome=stopped exit=7 errors=["stop request failed: requestStop: ECONNREFUSED (qmp)"]
`;

/**
 * An s6-log file of one VM's manager as `vmsandbox run` and `vmsandbox finish` write it (s6/run.ts,
 * s6/finish.ts): a run that gets ready and stops, finish, then a restart that fails in setup, finish.
 */
const tai = '@400000006581f2a30a1b2c3d ';
const line = (time: string, o: Record<string, unknown>) => `${tai}${JSON.stringify({ level: 'info', time, vm: 'web', ...o })}`;
const MANAGER_LOG = [
  line('2026-01-01T10:00:00.000Z', { supervisor: { pid: 10, comm: 's6-supervise' }, msg: 'supervisor: s6-supervise (pid 10)' }),
  line('2026-01-01T10:00:00.001Z', { state: 'setup.setupNamespaces', event: 'xstate.init', services: {}, msg: 'setup.setupNamespaces' }),
  line('2026-01-01T10:00:00.010Z', { state: 'setup.mount', event: 'xstate.done.actor.createNamespaces', reason: 'sandbox init started (pid 11)', services: {}, msg: 'setup.mount: sandbox init started (pid 11)' }),
  line('2026-01-01T10:00:00.020Z', { state: 'setup.landlock', event: 'xstate.done.actor.mount', services: {}, msg: 'setup.landlock' }),
  line('2026-01-01T10:00:00.021Z', { state: 'setup.cgroup', event: 'xstate.done.actor.prepareLandlock', services: {}, msg: 'setup.cgroup' }),
  line('2026-01-01T10:00:00.022Z', { state: 'setup.launch', event: 'xstate.done.actor.createCgroups', services: {}, msg: 'setup.launch' }),
  line('2026-01-01T10:00:00.030Z', { state: 'running', event: 'xstate.done.actor.launch', reason: 'launched vmm (pid 13)', services: { vmm: 13 }, msg: 'running: launched vmm (pid 13)' }),
  line('2026-01-01T10:00:00.412Z', { event: 'ready', condition: 'QMP greeting on /run/vmsandbox/web/vmm/qmp.sock', ms: 412, notified: true, msg: 'ready: QMP greeting on /run/vmsandbox/web/vmm/qmp.sock, 412 ms after start; s6 notified' }),
  line('2026-01-01T10:00:05.000Z', { event: { type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false }, msg: 'received STOP_REQUESTED (SIGTERM)' }),
  line('2026-01-01T10:00:05.001Z', { state: 'gracefulStop.vmm.requesting', event: 'STOP_REQUESTED', reason: 'stop requested (SIGTERM)', outcome: 'stopped', services: { vmm: 13 }, msg: 'x' }),
  line('2026-01-01T10:00:05.300Z', { state: 'gracefulStop.services', event: 'SERVICE_EXITED', reason: 'vmm (pid 13) exit code 0', outcome: 'stopped', services: {}, msg: 'x' }),
  line('2026-01-01T10:00:05.310Z', { state: 'teardown.kill', event: 'xstate.done.actor.terminateServices', outcome: 'stopped', services: {}, msg: 'x' }),
  line('2026-01-01T10:00:05.320Z', { state: 'teardown.cleanup', event: 'xstate.done.actor.killAll', outcome: 'stopped', services: {}, msg: 'x' }),
  line('2026-01-01T10:00:05.330Z', { state: 'stopped', event: 'xstate.done.actor.cleanup', outcome: 'stopped', services: {}, msg: 'stopped' }),
  line('2026-01-01T10:00:05.331Z', { outcome: 'stopped', exitCode: 0, errors: [], stopRequests: 1, msg: 'exit 0: stopped' }),
  line('2026-01-01T10:00:05.400Z', { event: 'finish', runExitCode: 0, runSignal: null, uptimeMs: 5331, removed: [], exitCode: 0, ms: 12, msg: 'finish: run exited 0; nothing left behind; s6 restarts the service if it is wanted up' }),
  line('2026-01-01T10:05:07.000Z', { state: 'setup.setupNamespaces', event: 'xstate.init', services: {}, msg: 'setup.setupNamespaces' }),
  line('2026-01-01T10:05:07.010Z', { state: 'setup.mount', event: 'xstate.done.actor.createNamespaces', services: {}, msg: 'setup.mount' }),
  line('2026-01-01T10:05:07.020Z', { state: 'setup.landlock', event: 'xstate.done.actor.mount', services: {}, msg: 'setup.landlock' }),
  line('2026-01-01T10:05:07.021Z', { level: 'error', state: 'teardown.kill', event: 'xstate.error.actor.prepareLandlock', reason: 'landlock failed: E2BIG', services: {}, msg: 'teardown.kill: landlock failed: E2BIG' }),
  line('2026-01-01T10:05:07.030Z', { state: 'teardown.cleanup', event: 'xstate.done.actor.killAll', services: {}, msg: 'teardown.cleanup' }),
  line('2026-01-01T10:05:07.040Z', { state: 'failed', event: 'xstate.done.actor.cleanup', outcome: 'setupFailed', services: {}, msg: 'failed' }),
  line('2026-01-01T10:05:07.041Z', { level: 'error', outcome: 'setupFailed', exitCode: 111, errors: ['landlock failed: E2BIG'], stopRequests: 0, msg: 'exit 111: setupFailed: landlock failed: E2BIG' }),
  line('2026-01-01T10:05:07.100Z', { event: 'finish', runExitCode: 111, runSignal: null, uptimeMs: 41, removed: [], exitCode: 0, ms: 9, msg: 'finish: run exited 111; nothing left behind; early failure 41 ms after its start (1 of 5 in a row before giving up): s6 restarts the service' }),
].join('\n') + '\n';

async function currentState(page: Page): Promise<string> {
  return (await page.locator('#current-state').textContent()) ?? '';
}

async function activeInChart(page: Page): Promise<string | null> {
  return page.locator('#chart .state.active').getAttribute('data-state');
}

/** How far the active state is from the nearest edge of the chart pane (px; negative: cut off). */
async function activeMargin(page: Page): Promise<number> {
  return page.evaluate(() => {
    const c = document.querySelector('#chart')!.getBoundingClientRect();
    const a = document.querySelector('#chart .state.active')!.getBoundingClientRect();
    return Math.min(a.top - c.top, c.bottom - a.bottom, a.left - c.left, c.right - a.right);
  });
}

/** The timeline's note rows (not state changes) as the page shows them: [kind class, text]. */
async function noteRows(page: Page): Promise<[string, string][]> {
  return page.locator('#timeline tr.note').evaluateAll((rows) =>
    rows.map((r) => [[...r.classList].find((c) => c.startsWith('kind-')) ?? '', r.querySelector('td:last-child')?.textContent ?? '']),
  );
}

describe.skipIf(skip)('the visualizer page', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  describe('live', () => {
    let root: string;
    let sb: SimulatedSandbox;
    let insp: Inspector;
    let page: Page;
    beforeAll(async () => {
      root = tempRoot();
      sb = await SimulatedSandbox.start(root, 'demo');
      sb.advanceTo('running');
      insp = await startInspector({ listen: '127.0.0.1:0', roots: [root], scanMs: 200, log: quiet });
      page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(insp.url);
      await page.waitForSelector('body[data-ready="true"]');
      expect(requests.every((u) => u.startsWith(insp.base))).toBe(true); // nothing from the network
      expect(requests.every((u) => new URL(u).searchParams.get('token') === insp.token)).toBe(true); // every request carries the token
    });
    afterAll(async () => {
      await page?.close();
      await sb?.close();
      await insp?.close();
    });

    it('lists the running sandbox with its state highlighted and its services', async () => {
      await page.waitForSelector('#sandboxes button[data-id]');
      expect(await page.locator('#sandboxes button .name').allTextContents()).toEqual(['demo']);
      await expect.poll(() => currentState(page)).toBe('running');
      expect(await activeInChart(page)).toBe('running');
      // The chart follows the current state: well inside the pane, not at its edge.
      expect(await activeMargin(page)).toBeGreaterThanOrEqual(60);
      expect(await page.locator('#services tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.service))).toEqual(['virtiofsd', 'vmm']);
      expect(await page.locator('#services tbody').textContent()).toContain('demo/svc-vmm');
      await page.screenshot({ path: join(outDir, 'live.png') });
    });

    it('shows each service\'s output as it is written: a new line within a second, as text, the last 200 kept', async () => {
      const vmmLines = page.locator('#output .svc-output[data-service="vmm"] li');
      expect(await page.locator('#output .svc-output').evaluateAll((ss) => ss.map((x) => (x as HTMLElement).dataset.service))).toEqual(['virtiofsd', 'vmm']);
      expect(await vmmLines.allTextContents()).toEqual(['no output yet']);
      const t0 = Date.now();
      sb.status.output({ type: 'line', service: 'vmm', stream: 'stdout', line: 'QEMU 7.2.0 monitor - type help', cut: false });
      await page.waitForFunction(
        () => [...document.querySelectorAll('#output .svc-output[data-service="vmm"] li')].some((li) => li.textContent === 'QEMU 7.2.0 monitor - type help'),
        null,
        { timeout: 1000 },
      );
      expect(Date.now() - t0).toBeLessThan(1000);
      // A service's text is text: markup in it stays characters, and stderr and drops are told apart.
      sb.status.output({ type: 'line', service: 'vmm', stream: 'stderr', line: '<img src=x onerror="document.title=1">oops', cut: true });
      sb.status.output({ type: 'dropped', service: 'vmm', count: 4821, reason: 'rate' });
      await expect.poll(() => vmmLines.count()).toBe(3);
      expect(await vmmLines.nth(1).getAttribute('class')).toBe('stderr');
      expect(await vmmLines.nth(1).textContent()).toBe('<img src=x onerror="document.title=1">oops[cut]');
      expect(await page.locator('#output img').count()).toBe(0);
      expect(await vmmLines.nth(2).getAttribute('class')).toBe('dropped');
      expect(await vmmLines.nth(2).textContent()).toBe('4821 lines dropped (over the rate limit)');
      expect(await page.locator('#output .svc-output[data-service="virtiofsd"] li').allTextContents()).toEqual(['no output yet']);
      await page.screenshot({ path: join(outDir, 'live-output.png') });
      // A flood: the page keeps the newest 200 and follows them.
      for (let i = 0; i < 300; i++) sb.status.output({ type: 'line', service: 'vmm', stream: 'stdout', line: `line ${i}`, cut: false });
      await page.waitForFunction(() => document.querySelector('#output .svc-output[data-service="vmm"] li:last-child')?.textContent === 'line 299', null, { timeout: 2000 });
      expect(await vmmLines.count()).toBe(200);
      expect(await vmmLines.first().textContent()).toBe('line 100');
      const scrolled = await page.locator('#output .svc-output[data-service="vmm"] ol').evaluate((ol) => ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 4);
      expect(scrolled, 'the list follows the newest line').toBe(true);
      // A page opened now gets the same lines from the snapshot.
      const late = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      try {
        await late.goto(insp.url);
        await late.waitForSelector('body[data-ready="true"]');
        await late.waitForFunction(() => document.querySelectorAll('#output .svc-output[data-service="vmm"] li').length === 200, null, { timeout: 2000 });
        expect(await late.locator('#output .svc-output[data-service="vmm"] li').last().textContent()).toBe('line 299');
      } finally {
        await late.close();
      }
    });

    it('shows readiness on the timeline, worded as the replay of the manager\'s log words it', async () => {
      sb.status.ready('QMP greeting on /run/vmsandbox/demo/vmm/qmp.sock', 412);
      await page.waitForFunction(() => document.querySelector('#timeline tr.note.kind-ready') !== null, null, { timeout: 1000 });
      expect(await noteRows(page)).toContainEqual(['kind-ready', 'eventready: QMP greeting on /run/vmsandbox/demo/vmm/qmp.sock, 412 ms after start']);
      expect(await page.locator('#timeline tr.note.kind-ready td:last-child .tag').textContent()).toBe('event');
      // Right after the record it followed (running), and not in the future.
      const rowAbove = page.locator('#timeline tr.note.kind-ready').locator('xpath=preceding-sibling::tr[contains(@class,"record")][1]');
      expect(await rowAbove.getAttribute('data-state')).toBe('running');
      expect(await page.locator('#timeline tr.note.kind-ready').getAttribute('class')).not.toContain('future');
    });

    it('shows a state change within a second', async () => {
      const t0 = Date.now();
      sb.advanceTo('gracefulStop.vmm.requesting');
      await page.waitForFunction(() => document.querySelector('#current-state')?.textContent === 'gracefulStop.vmm.requesting', null, { timeout: 1000 });
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(await activeInChart(page)).toBe('gracefulStop.vmm.requesting');
      expect(await page.locator('#chart .state.active-parent').evaluateAll((gs) => gs.map((g) => (g as HTMLElement).dataset.state))).toEqual(['gracefulStop', 'gracefulStop.vmm']);
      expect(await page.locator('#timeline tr.record.current').getAttribute('data-state')).toBe('gracefulStop.vmm.requesting');
      expect(await activeMargin(page)).toBeGreaterThanOrEqual(60);
    });

    it('keeps the chart on the current state as it moves, and leaves a reader\'s scrolling alone between moves', async () => {
      for (const s of ['gracefulStop.services', 'teardown.cleanup']) {
        // The reader scrolled the chart elsewhere: the next state change brings it back.
        await page.locator('#chart').evaluate((c) => c.scrollTo(0, 0));
        sb.advanceTo(s);
        await page.waitForFunction((want) => document.querySelector('#current-state')?.textContent === want, s, { timeout: 1000 });
        expect(await activeInChart(page)).toBe(s);
        expect(await activeMargin(page), s).toBeGreaterThanOrEqual(60);
      }
      // A re-render without a move (the page reconnecting gets the whole view again) does not pull it back.
      await page.locator('#chart').evaluate((c) => c.scrollTo(0, 0));
      await page.evaluate(() => window.dispatchEvent(new Event('resize')));
      await page.locator('#fit').check();
      await page.locator('#fit').uncheck();
      await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur()); // the keys go to the page again
      expect(await activeMargin(page)).toBeGreaterThanOrEqual(60); // toggling the fit is a change of the chart: it follows
      // Something that is not a move (a kernel event: a timeline note) re-renders the page and leaves the chart where the reader put it.
      await page.locator('#chart').evaluate((c) => c.scrollTo(0, 0));
      const notes = (await noteRows(page)).length;
      sb.status.event({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
      await expect.poll(async () => (await noteRows(page)).length).toBe(notes + 1);
      expect(await page.locator('#chart').evaluate((c) => c.scrollTop)).toBe(0);
      expect(await currentState(page)).toBe('teardown.cleanup');
    });

    it('lists a sandbox that appears later, and follows one to its end', async () => {
      const other = await SimulatedSandbox.start(root, 'alpha');
      other.advanceTo('setup.mount');
      await page.waitForFunction(() => document.querySelectorAll('#sandboxes button[data-id]').length === 2, null, { timeout: 2000 });
      expect(await page.locator('#sandboxes button .name').allTextContents()).toEqual(['alpha', 'demo']);
      await other.close();
      sb.advanceTo('stopped');
      await page.waitForFunction(() => document.querySelector('#current-state')?.textContent === 'stopped', null, { timeout: 1000 });
      expect(await page.locator('#outcome').textContent()).toBe('outcome: stopped');
      await sb.close();
      await page.waitForFunction(() => document.querySelector('#connection')?.textContent?.includes('manager gone'), null, { timeout: 2000 });
      // stepping back through a finished live run works like a replay
      await page.keyboard.press('Home');
      expect(await currentState(page)).toBe('setup.setupNamespaces');
      await page.keyboard.press('ArrowRight');
      expect(await currentState(page)).toBe('setup.mount');
    });
  });

  async function replayPage(file: string): Promise<{ insp: Inspector; page: Page }> {
    const insp = await startInspector({ listen: '127.0.0.1:0', replay: file, log: quiet });
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    await page.goto(insp.url);
    await page.waitForSelector('body[data-ready="true"]');
    return { insp, page };
  }

  it(`replays a failing seed's trace (seed ${FAILING_SEED}), stepping with buttons, keys and the scrubber`, async () => {
    const text = execFileSync(join(repoRoot, 'bin', 'vmsandbox'), ['sim', '--seed', String(FAILING_SEED), '--trace'], { encoding: 'utf8' });
    const file = join(tempRoot(), `seed-${FAILING_SEED}.trace`);
    writeFileSync(file, text);
    const expected = parseSimTrace(text).records.map((r) => r.state);
    expect(expected[expected.length - 1]).toBe('failed');
    const { insp, page } = await replayPage(file);
    try {
      expect(await page.locator('#sandboxes button .name').allTextContents()).toEqual([`seed ${FAILING_SEED}`]);
      // A trace's times are virtual: no start time (not 1970) in the list or the summary.
      expect(await page.locator('#sandboxes button .started').count()).toBe(0);
      expect(await page.locator('#facts dt').allTextContents()).not.toContain('started');
      // A failing run opens where it went wrong: the failure's step, its row red and current.
      const failAt = parseSimTrace(text).records.findIndex((r) => r.failure);
      expect(expected[failAt]).toBe('teardown.kill');
      expect(await currentState(page)).toBe('teardown.kill');
      expect(await activeInChart(page)).toBe('teardown.kill');
      expect(await page.locator('#timeline tr.record.current').getAttribute('class')).toContain('failure');
      expect(await page.locator('#chart .edge.taken').getAttribute('data-from')).toBe('setup.landlock');
      expect(await page.locator('#position').textContent()).toMatch(new RegExp(`^step ${failAt + 1} / ${expected.length}`));
      await page.keyboard.press('Home');
      expect(await currentState(page)).toBe(expected[0]);
      const seen = [await activeInChart(page)];
      for (let i = 1; i < expected.length; i++) {
        if (i % 2) await page.locator('#next').click();
        else await page.keyboard.press('ArrowRight');
        seen.push(await activeInChart(page));
        expect(await page.locator('#timeline tr.record.current').getAttribute('data-seq')).toBe(String(i));
      }
      expect(seen).toEqual(expected);
      expect(await page.locator('#chart .state.active').getAttribute('class')).toContain('is-failed');
      expect(await page.locator('#outcome').textContent()).toBe('outcome: setupFailed');
      expect(await page.locator('#timeline tr.record.failure').count()).toBe(1);
      await page.screenshot({ path: join(outDir, 'replay-failed-seed.png') });
      await page.keyboard.press('ArrowLeft');
      expect(await currentState(page)).toBe(expected[expected.length - 2]);
      await page.locator('#scrub').fill('1');
      expect(await currentState(page)).toBe(expected[1]);
      expect(await page.locator('#timeline tr.record.current').getAttribute('data-seq')).toBe('1');
      await page.locator('#prev').click();
      expect(await currentState(page)).toBe(expected[0]);
      expect(await page.locator('#prev').isDisabled()).toBe(true);
    } finally {
      await page.close();
      await insp.close();
    }
  });

  it('tells live sandboxes of the same name apart by their start time', async () => {
    const roots = [tempRoot(), tempRoot()];
    const a = await SimulatedSandbox.start(roots[0]!, 'demo');
    const b = await SimulatedSandbox.start(roots[1]!, 'demo');
    a.advanceTo('running');
    b.advanceTo('setup.mount');
    const insp = await startInspector({ listen: '127.0.0.1:0', roots, scanMs: 200, log: quiet });
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    try {
      await page.goto(insp.url);
      await page.waitForFunction(() => document.querySelectorAll('#sandboxes button[data-id]').length === 2, null, { timeout: 3000 });
      expect(await page.locator('#sandboxes button .name').allTextContents()).toEqual(['demo', 'demo']);
      const started = await page.locator('#sandboxes button .started').allTextContents();
      // Both started within this test, in this process: to the second they may read the same, so
      // then to the millisecond; each with the manager's pid.
      expect(started).toHaveLength(2);
      expect(new Set(started).size).toBe(2);
      for (const t of started) expect(t).toMatch(new RegExp(`^started \\d\\d:\\d\\d:\\d\\d(\\.\\d{3})? · pid ${process.pid}$`));
      // Oldest first, each one's own (the one started first is the one that reached running).
      const views = insp.views().sort((x, y) => x.startedAt!.localeCompare(y.startedAt!));
      expect(await page.locator('#sandboxes button').evaluateAll((bs) => bs.map((x) => (x as HTMLElement).dataset.id))).toEqual(views.map((v) => v.id));
      expect(await page.locator('#sandboxes button .started').first().getAttribute('title')).toBe(views[0]!.startedAt);
      await page.screenshot({ path: join(outDir, 'live-same-name.png') });
    } finally {
      await page.close();
      await a.close();
      await b.close();
      await insp.close();
    }
  });

  it("replays a manager's s6-log file: one entry per run by start time, readiness, the run's own end, a failing run opened at its failure", async () => {
    const file = join(tempRoot(), 'current');
    writeFileSync(file, MANAGER_LOG);
    const { insp, page } = await replayPage(file);
    try {
      expect(await page.locator('#sandboxes button .name').allTextContents()).toEqual(['web', 'web']);
      const started = await page.locator('#sandboxes button .started').allTextContents();
      expect(started[0]).toMatch(/^started \d{4}-\d\d-\d\d \d\d:\d\d:00$/);
      expect(started[1]).toMatch(/^started \d{4}-\d\d-\d\d \d\d:\d\d:07$/);
      const fact = (name: string) => page.locator('#facts div', { has: page.locator(`dt:text-is("${name}")`) }).locator('dd').textContent();

      // The first run stopped cleanly: it opens at its end, and its end is the run's exit line
      // (finish's own exitCode after it is a note), with no placeholders.
      expect(await currentState(page)).toBe('stopped');
      expect(await fact('end')).toBe('stopped · stopped · exit 0');
      expect(await fact('started')).toBe(await page.evaluate(() => new Date('2026-01-01T10:00:00.000Z').toLocaleString()));
      // A replay has no "now": the services are the step's.
      expect(await page.locator('#services-at').textContent()).toBe('(at +5.330 s)');
      const notes = await noteRows(page);
      expect(notes).toContainEqual(['kind-ready', 'eventready: QMP greeting on /run/vmsandbox/web/vmm/qmp.sock, 412 ms after start']);
      expect(notes).toContainEqual(['kind-log', 'logfinish: run exited 0; nothing left behind; s6 restarts the service if it is wanted up']);
      expect(notes.filter(([k]) => k === 'kind-end')).toEqual([['kind-end', 'endexit 0: stopped']]);
      await page.screenshot({ path: join(outDir, 'replay-log.png') });

      // The restart failed in setup: it opens at the failure, its row red and current.
      await page.locator('#sandboxes button').nth(1).click();
      expect(await currentState(page)).toBe('teardown.kill');
      expect(await page.locator('#timeline tr.record.current').getAttribute('class')).toContain('failure');
      expect(await page.locator('#chart .edge.taken').getAttribute('data-from')).toBe('setup.landlock');
      expect(await fact('end')).toBe('failed · setupFailed · exit 111');
      expect(await page.locator('#services-at').textContent()).toBe('(at +0.021 s)');
      expect(await page.locator('#timeline tr.record').count()).toBe(6);
      await page.keyboard.press('End');
      expect(await currentState(page)).toBe('failed');
      expect(await page.locator('#outcome').textContent()).toBe('outcome: setupFailed');
    } finally {
      await page.close();
      await insp.close();
    }
  });

  it('draws the statechart with each label beside its own edge and a start marker on each initial state', async () => {
    const g = machineGraph(sandboxMachine);
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    try {
      await page.setContent(await toSvg(g));
      // Measured with the browser's own font: the gap between each label's text and its edge's path.
      const gaps = await page.locator('svg .edge').evaluateAll((edges) =>
        edges.map((e) => {
          const texts = [...e.querySelectorAll('text')].map((t) => (t as SVGTextElement).getBBox());
          const box = {
            x0: Math.min(...texts.map((b) => b.x)),
            y0: Math.min(...texts.map((b) => b.y)),
            x1: Math.max(...texts.map((b) => b.x + b.width)),
            y1: Math.max(...texts.map((b) => b.y + b.height)),
          };
          let gap = Infinity;
          for (const p of e.querySelectorAll('path')) {
            const pts = [...(p.getAttribute('d') ?? '').matchAll(/(-?[\d.]+),(-?[\d.]+)/g)].map((m) => ({ x: Number(m[1]), y: Number(m[2]) }));
            for (let i = 1; i < pts.length; i++) {
              const a = pts[i - 1]!, b = pts[i]!;
              const dx = Math.max(0, Math.min(a.x, b.x) - box.x1, box.x0 - Math.max(a.x, b.x));
              const dy = Math.max(0, Math.min(a.y, b.y) - box.y1, box.y0 - Math.max(a.y, b.y));
              gap = Math.min(gap, Math.hypot(dx, dy));
            }
          }
          return { edge: `${(e as SVGGElement).dataset.from} -> ${(e as SVGGElement).dataset.to}`, gap: Math.round(gap * 10) / 10 };
        }),
      );
      expect(gaps.length).toBeGreaterThan(20);
      expect(gaps.filter((x) => x.gap > 8), 'labels more than 8 px from their edge').toEqual([]);
      // Start markers: the machine's (to setup) above it, and one in each compound state to the child it enters first.
      const starts = await page.locator('svg .start').evaluateAll((gs) =>
        gs.map((s) => {
          const c = s.querySelector('circle')!;
          const to = document.querySelector(`.state[data-state="${(s as SVGGElement).dataset.to}"] > rect`) as SVGRectElement;
          const end = [...(s.querySelector('path')!.getAttribute('d') ?? '').matchAll(/(-?[\d.]+),(-?[\d.]+)/g)].pop()!;
          const r = to.getBBox();
          const ex = Number(end[1]), ey = Number(end[2]);
          return {
            parent: (s as SVGGElement).dataset.parent,
            to: (s as SVGGElement).dataset.to,
            dot: Number(c.getAttribute('r')) > 0,
            arrowOnTarget: ex >= r.x - 1 && ex <= r.x + r.width + 1 && ey >= r.y - 1 && ey <= r.y + r.height + 1,
          };
        }),
      );
      expect(starts).toEqual([
        { parent: '', to: 'setup', dot: true, arrowOnTarget: true },
        { parent: 'setup', to: 'setup.setupNamespaces', dot: true, arrowOnTarget: true },
        { parent: 'gracefulStop', to: 'gracefulStop.vmm', dot: true, arrowOnTarget: true },
        { parent: 'gracefulStop.vmm', to: 'gracefulStop.vmm.requesting', dot: true, arrowOnTarget: true },
        { parent: 'teardown', to: 'teardown.kill', dot: true, arrowOnTarget: true },
      ]);
      await page.screenshot({ path: join(outDir, 'statechart.png'), fullPage: true });
    } finally {
      await page.close();
    }
  });

  it('replays a hand-made trace: the highlight and the timeline move together', async () => {
    const file = join(tempRoot(), 'hand.trace');
    writeFileSync(file, HAND_TRACE);
    const expected = parseSimTrace(HAND_TRACE).records.map((r) => r.state);
    const { insp, page } = await replayPage(file);
    try {
      await page.keyboard.press('Home');
      await page.locator('#scrub').focus();
      for (let i = 0; i < expected.length; i++) {
        expect(await activeInChart(page)).toBe(expected[i]);
        expect(await page.locator('#timeline tr.record.current').getAttribute('data-state')).toBe(expected[i]);
        if (i < expected.length - 1) await page.keyboard.press('ArrowRight'); // the slider's own keys
      }
      await page.locator('#scrub').fill('8');
      expect(await activeInChart(page)).toBe('teardown.kill');
      expect(await page.locator('#chart .edge.taken').getAttribute('data-from')).toBe('gracefulStop.vmm.requesting');
      await page.locator('#show-kernel').check();
      await page.screenshot({ path: join(outDir, 'replay-hand.png') });
    } finally {
      await page.close();
      await insp.close();
    }
  });
});
