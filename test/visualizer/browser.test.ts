// The page in a real (headless) chromium: a live simulated sandbox, a state change within a second,
// each service's output as it comes, and replays of a failing seed's trace and of a hand-made trace, stepped and scrubbed.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInspector, type Inspector } from '../../visualizer/inspect.js';
import { parseSimTrace } from '../../visualizer/replay.js';
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

async function currentState(page: Page): Promise<string> {
  return (await page.locator('#current-state').textContent()) ?? '';
}

async function activeInChart(page: Page): Promise<string | null> {
  return page.locator('#chart .state.active').getAttribute('data-state');
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

    it('shows a state change within a second', async () => {
      const t0 = Date.now();
      sb.advanceTo('gracefulStop.vmm.requesting');
      await page.waitForFunction(() => document.querySelector('#current-state')?.textContent === 'gracefulStop.vmm.requesting', null, { timeout: 1000 });
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(await activeInChart(page)).toBe('gracefulStop.vmm.requesting');
      expect(await page.locator('#chart .state.active-parent').evaluateAll((gs) => gs.map((g) => (g as HTMLElement).dataset.state))).toEqual(['gracefulStop', 'gracefulStop.vmm']);
      expect(await page.locator('#timeline tr.record.current').getAttribute('data-state')).toBe('gracefulStop.vmm.requesting');
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

  it('replays a hand-made trace: the highlight and the timeline move together', async () => {
    const file = join(tempRoot(), 'hand.trace');
    writeFileSync(file, HAND_TRACE);
    const expected = parseSimTrace(HAND_TRACE).records.map((r) => r.state);
    const { insp, page } = await replayPage(file);
    try {
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
