// vmsandbox inspect: the page. Plain ES module, no framework, nothing from the network but this
// server's /api/state (a snapshot) and /api/events (server-sent events: sandbox, svg, output).
// Data is always put in the DOM as text (the services' output too: it is whatever a service wrote);
// the only markup inserted is the statechart SVG, which the server renders from the machine
// definition.

// The server answers only requests that carry its token; index.html loads this script with it
// (/app.js?token=…), so the API calls take it from here rather than from a cookie.
const TOKEN_QUERY = `?token=${encodeURIComponent(new URL(import.meta.url).searchParams.get('token') ?? '')}`;

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
};

const state = {
  mode: 'live',
  svgs: new Map(),
  sandboxes: new Map(),
  selected: null,
  /** Position (record index) per sandbox; absent = follow the latest. */
  pos: new Map(),
  shownSvg: null,
  /** A render of the selected sandbox's output is queued (one per frame, however many lines come). */
  outputQueued: false,
  /** What the chart was last scrolled to (sandbox, step, chart, fit): it follows when that changes. */
  chartFollowed: null,
};

/** visualizer/protocol.ts OUTPUT_KEPT: the entries kept per service, here as on the server. */
const OUTPUT_KEPT = 200;

function phaseOf(s, outcome) {
  if (!s) return 'stopped';
  if (s === 'failed') return 'failed';
  if (s === 'stopped') return 'stopped';
  if (s.startsWith('setup')) return 'setup';
  if (s === 'running') return 'running';
  if (s === 'done') return outcome && !['stopped', 'forced', 'poweredOff'].includes(outcome) ? 'failed' : 'stopping';
  return 'stopping';
}

const fmtAt = (ms) => `+${(ms / 1000).toFixed(3)} s`;
const fmtBytes = (n) => (n === undefined ? '—' : n >= 1 << 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(0)} KiB` : `${n} B`);

const pad2 = (n) => String(n).padStart(2, '0');
/** A start time, local, 24 h: "14:03:07", with the date when not today, with ms when `ms`. */
function fmtStart(iso, ms = false) {
  const d = new Date(iso ?? NaN);
  if (Number.isNaN(d.getTime())) return null;
  const time = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}${ms ? `.${String(d.getMilliseconds()).padStart(3, '0')}` : ''}`;
  return d.toDateString() === new Date().toDateString() ? time : `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${time}`;
}

/** Where a replay opens: its first failure (the step that went wrong), else its end. */
function openingStep(v) {
  const f = v.history.findIndex((r) => r.failure);
  return f >= 0 ? f : Math.max(0, v.history.length - 1);
}

function sortedSandboxes() {
  return [...state.sandboxes.values()].sort((a, b) => a.vm.localeCompare(b.vm) || (a.startedAt ?? '').localeCompare(b.startedAt ?? ''));
}

function position(v) {
  const n = v.history.length;
  const p = state.pos.get(v.id);
  return p === undefined ? n - 1 : Math.min(p, n - 1);
}

// ---- sidebar ----
function renderList() {
  const ul = $('#sandboxes');
  ul.replaceChildren();
  const list = sortedSandboxes();
  // Runs of one VM (a restart, a log of several runs) are told apart by their start time: to the
  // second, or to the millisecond where two would read the same.
  const starts = new Map();
  for (const v of list) {
    const k = `${v.vm}\u0000${fmtStart(v.startedAt)}`;
    starts.set(k, (starts.get(k) ?? 0) + 1);
  }
  for (const v of list) {
    const last = v.history[v.history.length - 1];
    const phase = phaseOf(last?.state, last?.outcome);
    const start = fmtStart(v.startedAt, starts.get(`${v.vm}\u0000${fmtStart(v.startedAt)}`) > 1);
    const btn = el(
      'button',
      { type: 'button', dataset: { id: v.id }, 'aria-current': String(v.id === state.selected) },
      el('span', { class: 'name' }, el('span', { class: `dot phase-${phase}`, 'aria-hidden': 'true' }), v.vm),
      el('span', { class: 'state muted' }, `${last?.state ?? '—'}${v.source === 'live' && !v.connected ? ' · ended' : ''}${v.source !== 'live' ? ` · ${v.source === 'sim' ? 'sim trace' : 'log'}` : ''}`),
      start ? el('span', { class: 'started muted', title: v.startedAt }, `started ${start}${v.source === 'live' && v.pid ? ` · pid ${v.pid}` : ''}`) : null,
    );
    btn.addEventListener('click', () => select(v.id));
    ul.append(el('li', {}, btn));
  }
  const empty = $('#empty');
  empty.hidden = list.length > 0;
  empty.textContent = state.mode === 'live' ? `No sandbox found under ${state.roots.join(', ')} (looking for */status.sock).` : 'Nothing to replay.';
}

function select(id, focus = false) {
  state.selected = id;
  renderList();
  renderDetail();
  if (focus) document.querySelector(`#sandboxes button[data-id="${CSS.escape(id)}"]`)?.focus();
}

// ---- detail ----
function ensureChart(v) {
  const svg = state.svgs.get(v.graphKey);
  if (!svg) return false;
  if (state.shownSvg !== v.graphKey) {
    $('#chart').innerHTML = svg; // trusted: rendered by the server from the machine definition
    state.shownSvg = v.graphKey;
  }
  return true;
}

function highlight(v, p) {
  const chart = $('#chart');
  for (const n of chart.querySelectorAll('.state')) n.classList.remove('active', 'active-parent', 'visited', 'is-failed', 'is-stopped');
  for (const n of chart.querySelectorAll('.edge.taken')) n.classList.remove('taken');
  const rec = v.history[p];
  if (!rec) return;
  for (const r of v.history.slice(0, p)) {
    const parts = r.state.split('.');
    for (let i = 1; i <= parts.length; i++) chart.querySelector(`.state[data-state="${CSS.escape(parts.slice(0, i).join('.'))}"]`)?.classList.add('visited');
  }
  const parts = rec.state.split('.');
  const chain = parts.map((_, i) => parts.slice(0, i + 1).join('.'));
  chain.forEach((id, i) => {
    const g = chart.querySelector(`.state[data-state="${CSS.escape(id)}"]`);
    if (!g) return;
    g.classList.remove('visited');
    g.classList.add(i === chain.length - 1 ? 'active' : 'active-parent');
    if (i === chain.length - 1 && rec.state === 'failed') g.classList.add('is-failed');
    if (i === chain.length - 1 && rec.state === 'stopped') g.classList.add('is-stopped');
  });
  // The transition just taken: an edge from the previous state (or an ancestor) to this one (or one).
  const prev = v.history[p - 1];
  if (prev) {
    const pp = prev.state.split('.');
    const from = pp.map((_, i) => pp.slice(0, i + 1).join('.'));
    const cands = [...chart.querySelectorAll('.edge')].filter((e) => from.includes(e.dataset.from) && chain.includes(e.dataset.to));
    const labelled = cands.filter((e) => (e.dataset.labels ?? '').split('|').some((l) => l === rec.label || l.startsWith(`${rec.label} [`)));
    const pool = labelled.length ? labelled : cands;
    // The most specific source: the state itself before its ancestors.
    pool.sort((a, b) => b.dataset.from.length - a.dataset.from.length);
    pool[0]?.classList.add('taken');
  }
  const active = chart.querySelector('.state.active');
  // The chart follows the current state: when it moves (or the chart changes), the active state is
  // brought well inside the pane (centred when it is near or past an edge). Between moves the reader
  // may scroll the chart freely: a fresh sample of the services does not pull it back.
  const key = `${v.id}|${p}|${rec.state}|${state.shownSvg}|${document.body.classList.contains('fit')}`;
  if (active && state.chartFollowed !== key) {
    state.chartFollowed = key;
    const r = active.getBoundingClientRect();
    const c = chart.getBoundingClientRect();
    const my = Math.min(80, c.height / 5);
    const mx = Math.min(80, c.width / 5);
    if (r.top < c.top + my || r.bottom > c.bottom - my) chart.scrollTop += r.top + r.height / 2 - (c.top + c.height / 2);
    if (r.left < c.left + mx || r.right > c.right - mx) chart.scrollLeft += r.left + r.width / 2 - (c.left + c.width / 2);
  }
}

function renderFacts(v) {
  const facts = [];
  const add = (k, val) => facts.push(el('div', {}, el('dt', {}, k), el('dd', {}, String(val))));
  if (v.source === 'live') {
    add('manager pid', v.pid ?? '—');
    add('started', v.startedAt ? new Date(v.startedAt).toLocaleString() : '—');
    add('socket', v.socket ?? '—');
  } else {
    add('source', v.source === 'sim' ? 'simulator trace' : 'manager log');
    if (v.startedAt) add('started', new Date(v.startedAt).toLocaleString());
  }
  if (v.config) {
    const t = v.config.timeouts;
    add('deadlines', `setup ${t.setupMs} ms · stop ${t.stopMs} ms · kill ${t.killMs} ms`);
    add('landlock', `min ABI ${v.config.landlock.minAbi}${v.config.landlock.allowDegraded ? ', may degrade' : ''}`);
    add('runtime dir', v.config.runtimeDir);
  }
  if (v.plan) {
    const pl = v.plan;
    if (pl.fail) add('injected failure', `${pl.fail.op} call ${pl.fail.call}: ${pl.fail.errno}`);
    if (Array.isArray(pl.stopAt)) add('stop requests at', pl.stopAt.map((t) => `${t} ms`).join(', '));
  }
  // What is known of the end, no placeholders: "failed · setupFailed · exit 111", "failed · exit 111".
  if (v.end) add('end', [v.end.state, v.end.outcome, v.end.exitCode === null ? null : `exit ${v.end.exitCode}`].filter(Boolean).join(' · '));
  $('#facts').replaceChildren(...facts);
}

function renderServices(v, p) {
  const rec = v.history[p];
  const latest = p === v.history.length - 1;
  const services = latest ? v.services : rec?.services ?? [];
  // "now" only while a manager is there to say so; a replay or an ended run shows the step's time.
  const now = latest && v.source === 'live' && v.connected;
  $('#services-at').textContent = rec ? (now ? '(now)' : `(at ${fmtAt(rec.at)})`) : '';
  const rows = services.map((s) =>
    el(
      'tr',
      { dataset: { service: s.name } },
      el('td', {}, s.name + (s.vmm ? ' (vmm)' : '')),
      el('td', { class: 'num' }, String(s.pid)),
      el('td', { class: 'num' }, s.uid === null ? '—' : String(s.uid)),
      el('td', {}, s.cgroup ? el('code', {}, s.cgroup) : '—'),
      el('td', { class: 'num' }, fmtBytes(s.memoryCurrent)),
      el('td', { class: 'num' }, s.pidsCurrent === undefined ? '—' : String(s.pidsCurrent)),
    ),
  );
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 6, class: 'muted' }, 'no live service at this point')));
  $('#services tbody').replaceChildren(...rows);
}

// ---- each service's recent output (live) ----
const DROP_WHY = { rate: 'over the rate limit', socket: "the init's buffer to the manager was full" };

/** A service's entries: own properties only (a service may be called "constructor"). */
const outputOf = (output, name) => (Object.hasOwn(output, name) ? output[name] : null);

function outputItem(e) {
  if ('dropped' in e) {
    return el('li', { class: 'dropped', title: e.time }, `${e.dropped} line${e.dropped === 1 ? '' : 's'} dropped (${DROP_WHY[e.reason] ?? e.reason})`);
  }
  // The service's text, as text: never markup.
  return el('li', { class: e.stream, title: `${e.time} · ${e.stream}` }, e.line, e.cut ? el('span', { class: 'cut' }, '[cut]') : null);
}

function renderOutput(v) {
  const pane = $('#output');
  const live = v.source === 'live';
  $('#output-note').textContent = live ? `(the last ${OUTPUT_KEPT} lines of each service)` : '(live sandboxes only)';
  const output = v.output ?? {};
  const names = [...new Set([...(v.config?.services ?? []).map((s) => s.name), ...Object.keys(output)])];
  if (!live) names.length = 0;
  const blocks = names.map((name) => {
    const entries = outputOf(output, name) ?? [];
    const old = pane.querySelector(`.svc-output[data-service="${CSS.escape(name)}"] ol`);
    // Follow the newest line unless the reader scrolled up.
    const follow = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 4;
    const top = old?.scrollTop ?? 0;
    const ol = el('ol', { 'aria-label': `output of ${name}` }, ...entries.map(outputItem));
    if (!entries.length) ol.append(el('li', { class: 'empty' }, 'no output yet'));
    const block = el(
      'section',
      { class: 'svc-output', dataset: { service: name } },
      el('h4', {}, name, ' ', el('span', { class: 'muted' }, `${entries.filter((e) => !('dropped' in e)).length} line(s)`)),
      ol,
    );
    return { ol, follow, top, block };
  });
  pane.replaceChildren(...blocks.map((b) => b.block));
  for (const b of blocks) b.ol.scrollTop = b.follow ? b.ol.scrollHeight : b.top;
}

function queueOutput() {
  if (state.outputQueued) return;
  state.outputQueued = true;
  requestAnimationFrame(() => {
    state.outputQueued = false;
    const v = state.sandboxes.get(state.selected);
    if (v) renderOutput(v);
  });
}

function renderTimeline(v, p) {
  const body = $('#timeline tbody');
  const rows = [];
  const notesAfter = new Map();
  for (const n of v.notes) {
    if (!notesAfter.has(n.after)) notesAfter.set(n.after, []);
    notesAfter.get(n.after).push(n);
  }
  const noteRows = (after) =>
    (notesAfter.get(after) ?? []).map((n) =>
      el('tr', { class: `note kind-${n.kind}${after > p ? ' future' : ''}` }, el('td', { class: 'num' }, fmtAt(n.at)), el('td', { colSpan: 3 }, el('span', { class: 'tag' }, n.kind === 'ready' ? 'event' : n.kind), n.text)),
    );
  rows.push(...noteRows(-1));
  v.history.forEach((r, i) => {
    const cls = ['record', i === p ? 'current' : '', i > p ? 'future' : '', r.failure ? 'failure' : ''].filter(Boolean).join(' ');
    const tr = el(
      'tr',
      { class: cls, dataset: { seq: String(i), state: r.state }, tabIndex: -1, 'aria-selected': String(i === p) },
      el('td', { class: 'num' }, fmtAt(r.at)),
      el('td', {}, r.state),
      el('td', { title: r.event }, r.label),
      el('td', {}, r.reason ?? ''),
    );
    tr.addEventListener('click', () => setPos(v, i));
    rows.push(tr, ...noteRows(i));
  });
  body.replaceChildren(...rows);
  const cur = body.querySelector('tr.current');
  if (cur) {
    const wrap = $('.timeline-wrap');
    const r = cur.getBoundingClientRect();
    const w = wrap.getBoundingClientRect();
    if (r.top < w.top + 24 || r.bottom > w.bottom) wrap.scrollTop += r.top - w.top - w.height / 2;
  }
}

function renderDetail() {
  const v = state.sandboxes.get(state.selected);
  $('#detail').hidden = !v;
  if (!v) return;
  const n = v.history.length;
  const p = position(v);
  const rec = v.history[p];
  const last = v.history[n - 1];
  $('#vm-name').textContent = v.vm;
  const cs = $('#current-state');
  cs.textContent = rec?.state ?? '—';
  cs.className = `badge phase-${phaseOf(rec?.state, rec?.outcome)}`;
  cs.dataset.state = rec?.state ?? '';
  const oc = $('#outcome');
  const outcome = rec?.outcome ?? null;
  oc.textContent = outcome ? `outcome: ${outcome}` : '';
  oc.className = `badge phase-${['stopped', 'forced', 'poweredOff'].includes(outcome) ? 'stopped' : 'failed'}`;
  $('#connection').textContent =
    v.source === 'live' ? (v.connected ? 'live' : 'manager gone (socket closed)') : `replay of ${state.file ?? 'a file'}`;
  renderFacts(v);
  const scrub = $('#scrub');
  scrub.max = String(Math.max(0, n - 1));
  scrub.value = String(Math.max(0, p));
  scrub.setAttribute('aria-valuetext', rec ? `step ${p + 1} of ${n}: ${rec.state}` : 'no steps');
  $('#prev').disabled = p <= 0;
  $('#first').disabled = p <= 0;
  $('#next').disabled = p >= n - 1;
  $('#last').disabled = p >= n - 1;
  const following = !state.pos.has(v.id) && v.source === 'live';
  $('#position').textContent = rec ? `step ${p + 1} / ${n} · ${fmtAt(rec.at)}${following ? ' · following' : ''}${rec === last ? '' : ''}` : '';
  if (ensureChart(v)) highlight(v, p);
  renderServices(v, p);
  renderOutput(v);
  renderTimeline(v, p);
}

function setPos(v, p) {
  const n = v.history.length;
  p = Math.max(0, Math.min(n - 1, p));
  // At the last step of a live sandbox, follow new records.
  if (p === n - 1 && v.source === 'live') state.pos.delete(v.id);
  else state.pos.set(v.id, p);
  renderDetail();
}

function step(d) {
  const v = state.sandboxes.get(state.selected);
  if (v) setPos(v, position(v) + d);
}

// ---- wiring ----
function wire() {
  $('#prev').addEventListener('click', () => step(-1));
  $('#next').addEventListener('click', () => step(1));
  $('#first').addEventListener('click', () => step(-Infinity));
  $('#last').addEventListener('click', () => step(Infinity));
  $('#scrub').addEventListener('input', (e) => {
    const v = state.sandboxes.get(state.selected);
    if (v) setPos(v, Number(e.target.value));
  });
  $('#fit').addEventListener('change', (e) => {
    document.body.classList.toggle('fit', e.target.checked);
    renderDetail();
  });
  $('#show-kernel').addEventListener('change', (e) => document.body.classList.toggle('show-kernel', e.target.checked));
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    if (t instanceof HTMLInputElement && t.type === 'range') return; // the slider handles its own arrows
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
    const inList = t instanceof HTMLElement && t.closest('#sandboxes');
    if (e.key === 'ArrowRight') step(1);
    else if (e.key === 'ArrowLeft') step(-1);
    else if (e.key === 'Home') step(-Infinity);
    else if (e.key === 'End') step(Infinity);
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const list = sortedSandboxes();
      const i = list.findIndex((v) => v.id === state.selected);
      const next = list[Math.max(0, Math.min(list.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
      if (!next) return;
      select(next.id, !!inList);
    } else return;
    e.preventDefault();
  });
}

function upsert(v) {
  // A `sandbox` event carries no output (that comes line by line): keep what the page has.
  if (v.output === undefined || v.output === null) v.output = state.sandboxes.get(v.id)?.output ?? {};
  state.sandboxes.set(v.id, v);
  if (!state.selected || !state.sandboxes.has(state.selected)) state.selected = sortedSandboxes()[0]?.id ?? null;
  // A newer run of the same VM replaces an ended one in view.
  const cur = state.sandboxes.get(state.selected);
  if (cur && cur.source === 'live' && !cur.connected && v.vm === cur.vm && v.connected && v.id !== cur.id) state.selected = v.id;
}

async function start() {
  wire();
  const res = await fetch(`/api/state${TOKEN_QUERY}`);
  if (!res.ok) throw new Error(`${res.status}: ${await res.text()}`);
  const snap = await res.json();
  state.mode = snap.mode;
  state.file = snap.file;
  state.roots = snap.roots;
  for (const [k, svg] of Object.entries(snap.svgs)) state.svgs.set(k, svg);
  for (const v of snap.sandboxes) upsert(v);
  $('#mode').textContent = snap.mode === 'replay' ? `replay: ${snap.file}` : `live: ${snap.roots.join(', ')}`;
  if (snap.mode === 'replay') for (const v of snap.sandboxes) state.pos.set(v.id, openingStep(v));
  renderList();
  renderDetail();
  const link = $('#link');
  if (snap.mode === 'replay') {
    link.textContent = 'file';
    link.className = 'pill';
    document.body.dataset.ready = 'true';
    return;
  }
  const es = new EventSource(`/api/events${TOKEN_QUERY}`);
  es.addEventListener('open', () => {
    link.textContent = 'connected';
    link.className = 'pill ok';
    document.body.dataset.ready = 'true';
  });
  es.addEventListener('error', () => {
    link.textContent = 'reconnecting…';
    link.className = 'pill bad';
  });
  es.addEventListener('svg', (e) => {
    const { key, svg } = JSON.parse(e.data);
    state.svgs.set(key, svg);
  });
  es.addEventListener('sandbox', (e) => {
    upsert(JSON.parse(e.data));
    renderList();
    renderDetail();
  });
  es.addEventListener('output', (e) => {
    const { id, service, entry } = JSON.parse(e.data);
    const v = state.sandboxes.get(id);
    if (!v) return;
    const list = outputOf(v.output, service) ?? (v.output[service] = []);
    list.push(entry);
    if (list.length > OUTPUT_KEPT) list.splice(0, list.length - OUTPUT_KEPT);
    if (id === state.selected) queueOutput();
  });
}

start().catch((e) => {
  $('#link').textContent = `error: ${e.message}`;
  $('#link').className = 'pill bad';
});
