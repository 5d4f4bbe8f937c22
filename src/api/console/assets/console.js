// The Switchyard operator console. Plain JavaScript, no build step: the node serves this file
// as it is. It reads the node's JSON API (/api/v1/) and follows its event stream, which the
// node feeds from one shared subscription; the page refetches what a change frame names.
'use strict';

window.consoleErrors = [];
window.addEventListener('error', (e) => window.consoleErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.consoleErrors.push(String(e.reason)));

const PAGE_ROWS = 50;
const INSTANCE_ROWS = 100;

const state = {
  token: sessionStorage.getItem('switchyard-token') || '',
  who: null,
  cluster: null,
  catalog: null, // { features, toggles, pending, revision } as the API gives them
  rows: [], // one row per feature, joined from the catalog
  revision: 0,
  live: false,
  view: 'features',
  arg: '',
  featurePage: 0,
  filters: { text: '', service: '', owner: '', state: '' },
  instances: { service: '', labels: '', q: '', offset: 0, data: null },
  detail: null, // the data of the readiness, rollout or history view
};

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return `${d.toLocaleString()}`;
}

let toastTimer = 0;
function toast(text, bad) {
  const t = $('toast');
  t.textContent = text;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 9000 : 4000);
}

function banner(text, warn) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
  b.className = warn ? 'banner warn' : 'banner';
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(json) {
  const hs = { Accept: 'application/json' };
  if (state.token) hs.Authorization = `Bearer ${state.token}`;
  if (json) hs['Content-Type'] = 'application/json';
  return hs;
}

async function api(path, body) {
  const init = { headers: headers(body !== undefined), method: body === undefined ? 'GET' : 'POST' };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(`/api/v1/${path}`, init);
  let data = null;
  try { data = await r.json(); } catch (_) { data = { error: r.statusText, code: String(r.status) }; }
  if (!r.ok) throw new ApiError(r.status, data.code, data.error || r.statusText);
  return data;
}

const enc = encodeURIComponent;

// One fetch at a time per key; a request while one runs asks for one more after it (with the
// latest function asked for).
const inflight = new Map();
function refresh(key, fn) {
  const now = inflight.get(key);
  if (now) { now.again = true; now.fn = fn; return; }
  const entry = { again: false, fn };
  inflight.set(key, entry);
  (async () => {
    do {
      entry.again = false;
      try { await entry.fn(); } catch (e) { failed(e); }
    } while (entry.again);
    inflight.delete(key);
  })();
}

const maxOf = (values, start) => values.reduce((a, b) => (b > a ? b : a), start);
const minOf = (values, start) => values.reduce((a, b) => (b < a ? b : a), start);

function failed(e) {
  if (e instanceof ApiError && e.status === 401) {
    banner(`Authentication needed: ${e.message}. Use the Token button.`);
  } else if (e instanceof ApiError && e.status === 503) {
    banner(`This node cannot vouch for its data: ${e.message}. Open the console of another node.`);
  } else if (e instanceof ApiError) {
    toast(`${e.code}: ${e.message}`, true);
  } else {
    toast(String(e), true);
  }
}

// ---------------------------------------------------------------- data

function joinCatalog(c) {
  const toggles = new Map(c.toggles.map((t) => [t.feature, t]));
  const pending = new Map(c.pending.map((p) => [p.feature, p]));
  state.rows = c.features.map((f) => {
    const t = toggles.get(f.name);
    let def = null;
    if (t) { try { def = JSON.parse(t.definition_json); } catch (_) { def = null; } }
    return {
      name: f.name,
      owner: f.owner,
      description: f.description,
      requirements: f.requirements,
      toggle: t || null,
      enabled: def ? def.state === 'ENABLED' : null,
      variant: def ? def.defaultVariant : null,
      pending: pending.get(f.name) || null,
    };
  });
}

async function loadCatalog() {
  const c = await api('features');
  state.catalog = c;
  state.revision = Math.max(state.revision, c.revision);
  joinCatalog(c);
  banner('');
}

// Refetches only the named features (a change frame names what changed), and merges them in.
async function loadNamed(names) {
  if (!state.catalog) { await loadCatalog(); return; }
  const part = await api(`features?names=${names.map(enc).join(',')}`);
  const c = state.catalog;
  const named = new Set(names);
  const keep = (list, key) => list.filter((x) => !named.has(x[key]));
  c.features = keep(c.features, 'name').concat(part.features).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  c.toggles = keep(c.toggles, 'feature').concat(part.toggles);
  c.pending = keep(c.pending, 'feature').concat(part.pending);
  c.revision = Math.max(c.revision, part.revision);
  state.revision = Math.max(state.revision, part.revision);
  joinCatalog(c);
  banner('');
}

// Names waiting to be refetched (gathered while a fetch runs).
const namesDue = new Set();
let everythingDue = false;

function canRelease() {
  const w = state.who;
  return !!w && (!w.authentication || w.role === 'admin' || w.role === 'release');
}

// ---------------------------------------------------------------- the event stream

function setLive(live) {
  state.live = live;
  renderHeader();
}

async function follow() {
  for (;;) {
    try {
      const r = await fetch('/api/v1/events', { headers: headers(false) });
      if (!r.ok) {
        let why = r.statusText;
        try { why = (await r.json()).error; } catch (_) { /* keep the status text */ }
        throw new ApiError(r.status, '', why);
      }
      setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          dispatch(block);
        }
      }
    } catch (e) {
      if (e instanceof ApiError && e.status !== 503) failed(e);
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function dispatch(block) {
  let event = 'message';
  let data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (!data) return;
  let d;
  try { d = JSON.parse(data); } catch (_) { return; }
  if (event === 'hello') { state.revision = Math.max(state.revision, d.revision); onChange({ everything: true, features: [], services: [] }); }
  if (event === 'change') onChange(d);
  if (event === 'status') onStatus(d);
}

function onChange(d) {
  if (d.revision) state.revision = Math.max(state.revision, d.revision);
  renderHeader();
  const touches = (name) => d.everything || d.features.includes(name);
  if (d.everything) everythingDue = true;
  for (const f of d.features || []) namesDue.add(f);
  if (everythingDue || namesDue.size) {
    refresh('catalog', async () => {
      const names = [...namesDue];
      const everything = everythingDue || names.length > 100;
      namesDue.clear();
      everythingDue = false;
      try {
        if (everything) await loadCatalog(); else if (names.length) await loadNamed(names);
      } catch (e) {
        everythingDue = true; // what was named is not in yet: reload it all next time
        throw e;
      }
      if (state.view === 'features') renderFeatures();
      renderPickers();
    });
  }
  if (state.view === 'readiness' && state.arg && (d.everything || d.services.length || touches(state.arg))) refresh('detail', loadDetail);
  if (state.view === 'rollout' && state.arg && touches(state.arg)) refresh('detail', loadDetail);
  if (state.view === 'history' && state.arg && touches(state.arg)) refresh('detail', loadDetail);
  if (state.view === 'instances' && (d.everything || d.services.length)) refresh('instances', loadInstances);
}

function onStatus(d) {
  state.cluster = d;
  renderHeader();
  if (state.view === 'cluster') renderCluster();
  // Reports of applied changes arrive on keepalives, not as changes: the status beat
  // refreshes an open rollout.
  if (state.view === 'rollout' && state.arg) refresh('detail', loadDetail);
}

// ---------------------------------------------------------------- header

function clusterHealth(c) {
  if (!c) return { level: '', text: 'connecting', problems: [] };
  const problems = [];
  if (c.serving) problems.push(`node ${c.node} cannot vouch for its data: ${c.serving}`);
  const members = c.members || [];
  if (!c.leader_id) problems.push('no leader');
  const unreachable = members.filter((m) => m.error);
  for (const m of unreachable) problems.push(`lost contact with node ${m.id}: ${m.error}`);
  const reached = members.filter((m) => !m.error);
  const byRevision = new Map();
  for (const m of reached) {
    const seen = byRevision.get(m.revision);
    if (seen !== undefined && seen !== m.digest) problems.push(`replicas disagree at revision ${m.revision}`);
    byRevision.set(m.revision, m.digest);
  }
  const top = Math.max(0, ...reached.map((m) => m.applied_index));
  for (const m of reached) {
    if (top - m.applied_index > 100) problems.push(`node ${m.id} is ${top - m.applied_index} entries behind`);
  }
  const bad = problems.some((p) => p.includes('disagree') || p.includes('no leader') || p.includes('vouch'));
  return { level: problems.length ? (bad ? 'bad' : 'warn') : 'ok', text: problems.length ? (bad ? 'trouble' : 'degraded') : 'healthy', problems };
}

function renderHeader() {
  const health = clusterHealth(state.cluster);
  const badge = $('health');
  badge.textContent = state.live ? health.text : 'disconnected';
  badge.className = `badge ${state.live ? health.level : 'bad'}`;
  const node = state.cluster ? `node ${state.cluster.node}` : (state.who ? `node ${state.who.node}` : '');
  $('where').textContent = `${node} · revision ${state.revision}${state.live ? ' · live' : ''}`;
  const w = state.who;
  $('who').textContent = w ? (w.authentication ? `${w.identity} (${w.role})` : 'authentication off') : '';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === state.view);
}

// ---------------------------------------------------------------- actions

function confirmAction(title, text, extra) {
  return new Promise((resolve) => {
    const d = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    const box = $('confirm-extra');
    box.replaceChildren(...(extra ? [extra] : []));
    $('confirm-reason').value = '';
    d.returnValue = '';
    d.onclose = () => resolve(d.returnValue === 'ok' ? $('confirm-reason').value : null);
    d.showModal();
  });
}

async function act(feature, action, body) {
  try {
    const r = await api(`features/${enc(feature)}/${action}`, body);
    const at = r.revision ? ` at revision ${r.revision}` : '';
    toast(r.pending ? `${feature}: waiting for the readiness gate${at}` : `${feature}: ${action} done${at}`);
    state.revision = Math.max(state.revision, r.revision || 0);
    refresh('catalog', async () => { await loadCatalog(); rerender(); });
  } catch (e) {
    failed(e);
  }
}

async function killSwitch(feature) {
  const reason = await confirmAction(`Turn off ${feature}?`, 'The kill switch: every instance stops serving the feature at once (immediate).');
  if (reason !== null) act(feature, 'off', { reason });
}

async function activate(feature) {
  const select = h('select', { id: 'confirm-mode' },
    h('option', { value: 'now' }, 'now (the fleet flips together after the switch delay)'),
    h('option', { value: 'when-ready' }, 'when ready (when every instance runs a version that has it)'));
  const reason = await confirmAction(`Turn on ${feature}?`, 'Activate the feature for the whole fleet.', h('label', {}, 'When', select));
  if (reason !== null) act(feature, 'on', { reason, mode: select.value });
}

async function rollback(feature, to) {
  const input = h('input', { id: 'confirm-revision', type: 'number', min: '1', placeholder: 'the one before the current', value: to || '' });
  const reason = await confirmAction(`Roll back ${feature}?`, 'Restore the toggle as it was at an earlier revision (immediate).', h('label', {}, 'To revision', input));
  if (reason === null) return;
  const body = { reason };
  if (input.value) body.to_revision = Number(input.value);
  act(feature, 'rollback', body);
}

async function cancelPending(feature) {
  const reason = await confirmAction(`Cancel the pending activation of ${feature}?`, 'The feature stays as it is now.');
  if (reason !== null) act(feature, 'cancel', { reason });
}

function actionButtons(row) {
  const allowed = canRelease();
  const why = allowed ? null : 'needs the release role';
  return h('span', { class: 'actions' },
    h('button', { class: 'danger', 'data-action': 'off', disabled: !allowed || row.enabled === false, title: why, onclick: () => killSwitch(row.name) }, 'Off'),
    h('button', { 'data-action': 'on', disabled: !allowed, title: why, onclick: () => activate(row.name) }, 'On…'),
    h('button', { 'data-action': 'rollback', disabled: !allowed || !row.toggle, title: why, onclick: () => rollback(row.name) }, 'Rollback…'),
    row.pending ? h('button', { 'data-action': 'cancel', disabled: !allowed, title: why, onclick: () => cancelPending(row.name) }, 'Cancel pending') : null);
}

// ---------------------------------------------------------------- views

const main = () => $('main');

function rerender() {
  renderHeader();
  const views = { cluster: renderCluster, features: renderFeatures, readiness: renderDetail, rollout: renderDetail, history: renderDetail, instances: renderInstances };
  (views[state.view] || renderFeatures)();
}

function renderCluster() {
  const c = state.cluster;
  if (!c) { main().replaceChildren(h('p', { class: 'muted' }, 'Waiting for the cluster status…')); return; }
  const health = clusterHealth(c);
  const leaderChanges = c.leader_changes || [];
  const members = c.members || [];
  main().replaceChildren(
    h('h2', {}, 'Cluster'),
    h('div', { class: 'cards' },
      card('members', members.length),
      card('leader', c.leader_id ? `node ${c.leader_id}` : 'none'),
      card('revision', c.revision),
      card('leader changes (1 h)', Math.max(0, leaderChanges.length - 1)),
      card('console pages on this node', c.pages)),
    health.problems.length
      ? h('ul', { id: 'cluster-problems', class: 'off' }, health.problems.map((p) => h('li', {}, p)))
      : h('p', { id: 'cluster-problems', class: 'on' }, 'All members reached, one leader, replicas agree.'),
    h('table', { id: 'members' },
      h('thead', {}, h('tr', {}, ['id', 'address', 'role', 'voter', 'term', 'last log', 'applied', 'revision', 'digest', 'contact'].map((t) => h('th', {}, t)))),
      h('tbody', {}, members.map((m) => h('tr', { 'data-member': m.id },
        h('td', { class: 'num' }, m.id),
        h('td', { class: 'mono' }, m.address),
        h('td', { class: m.role === 'leader' ? 'on' : '' }, m.error ? '?' : m.role),
        h('td', {}, m.voter ? 'voter' : 'learner'),
        h('td', { class: 'num' }, m.error ? '' : m.term),
        h('td', { class: 'num' }, m.error ? '' : m.last_log_index),
        h('td', { class: 'num' }, m.error ? '' : m.applied_index),
        h('td', { class: 'num' }, m.error ? '' : m.revision),
        h('td', { class: 'mono' }, m.error ? '' : String(m.digest).slice(0, 12)),
        h('td', { class: m.error ? 'off' : 'on' }, m.error ? `lost: ${m.error}` : 'ok'))))),
    h('h2', {}, 'Leader changes seen by this node (last hour)'),
    leaderChanges.length
      ? h('table', { id: 'leader-changes' },
        h('thead', {}, h('tr', {}, h('th', {}, 'when'), h('th', {}, 'term'), h('th', {}, 'leader'))),
        h('tbody', {}, leaderChanges.slice().reverse().map((l) => h('tr', {},
          h('td', {}, `${when(l.at_ms)} (${ago(l.at_ms)})`), h('td', { class: 'num' }, l.term), h('td', {}, l.leader_id ? `node ${l.leader_id}` : 'none')))))
      : h('p', { class: 'muted' }, 'None.'));
}

function card(label, value) {
  return h('div', { class: 'card' }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
}

function stateOf(row) {
  if (row.pending) return 'pending';
  if (row.enabled === null) return 'none';
  return row.enabled ? 'on' : 'off';
}

function filteredRows() {
  const f = state.filters;
  const text = f.text.toLowerCase();
  return state.rows.filter((r) => (!text || r.name.toLowerCase().includes(text) || (r.description || '').toLowerCase().includes(text))
    && (!f.service || r.requirements.some((q) => q.service === f.service))
    && (!f.owner || r.owner === f.owner)
    && (!f.state || stateOf(r) === f.state));
}

function renderFeatures() {
  if (!state.catalog) { main().replaceChildren(h('p', { class: 'muted' }, 'Loading features…')); return; }
  const services = [...new Set(state.rows.flatMap((r) => r.requirements.map((q) => q.service)))].sort();
  const owners = [...new Set(state.rows.map((r) => r.owner).filter(Boolean))].sort();
  const focused = document.activeElement && document.activeElement.id === 'filter-text';
  const rows = filteredRows();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  state.featurePage = Math.min(state.featurePage, pages - 1);
  const shown = rows.slice(state.featurePage * PAGE_ROWS, (state.featurePage + 1) * PAGE_ROWS);
  const f = state.filters;
  const onFilter = (key) => (e) => { f[key] = e.target.value; state.featurePage = 0; renderFeatures(); };
  const select = (key, label, options) => h('select', { id: `filter-${key}`, onchange: onFilter(key) },
    h('option', { value: '' }, label), options.map((o) => h('option', { value: o, selected: f[key] === o }, o)));
  const counts = { on: 0, off: 0, pending: 0, none: 0 };
  for (const r of state.rows) counts[stateOf(r)] += 1;
  main().replaceChildren(
    h('h2', {}, `Features (${state.rows.length}: ${counts.on} on, ${counts.off} off, ${counts.pending} pending, ${counts.none} without a toggle)`),
    h('div', { class: 'filters' },
      h('input', { id: 'filter-text', placeholder: 'name or description', value: f.text, oninput: onFilter('text') }),
      select('service', 'any service', services),
      select('owner', 'any owner', owners),
      select('state', 'any state', ['on', 'off', 'pending', 'none'])),
    pager(rows.length, state.featurePage, PAGE_ROWS, (p) => { state.featurePage = p; renderFeatures(); }),
    h('table', { id: 'features' },
      h('thead', {}, h('tr', {}, ['feature', 'owner', 'requires', 'state', 'variant', 'effective', 'pending', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, shown.map((r) => h('tr', { 'data-feature': r.name },
        h('td', {}, h('a', { href: `#/history/${enc(r.name)}` }, r.name), r.description ? h('div', { class: 'muted' }, r.description) : null),
        h('td', {}, r.owner),
        h('td', {}, r.requirements.map((q) => h('div', { class: 'mono' }, `${q.service} ${q.version_req}`))),
        h('td', { class: `state ${stateOf(r) === 'none' ? 'muted' : (r.enabled ? 'on' : 'off')}` }, r.enabled === null ? 'no toggle' : (r.enabled ? 'on' : 'off')),
        h('td', { class: 'mono' }, r.variant ?? ''),
        h('td', {}, r.toggle ? when(r.toggle.effective_at_ms) : ''),
        h('td', { class: 'pending' }, r.pending ? h('a', { href: `#/readiness/${enc(r.name)}` }, `when ready (since ${ago(r.pending.requested_at_ms)})`) : ''),
        h('td', {}, actionButtons(r),
          h('span', { class: 'actions' },
            h('a', { href: `#/readiness/${enc(r.name)}` }, 'readiness'), ' ',
            h('a', { href: `#/rollout/${enc(r.name)}` }, 'rollout'))))))));
  if (focused) focusEnd('filter-text');
  if (!window.consoleTimings) window.consoleTimings = { firstRenderMs: performance.now() };
}

function focusEnd(id) {
  const el = $(id);
  if (el) { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }
}

function pager(total, page, size, go) {
  const pages = Math.max(1, Math.ceil(total / size));
  return h('div', { class: 'pager' },
    h('button', { disabled: page <= 0, onclick: () => go(page - 1) }, '‹ previous'),
    h('span', { class: 'muted' }, total ? `${page * size + 1}–${Math.min(total, (page + 1) * size)} of ${total}` : 'none'),
    h('button', { disabled: page >= pages - 1, onclick: () => go(page + 1) }, 'next ›'));
}

function renderPickers() {
  const list = $('feature-names');
  if (!list) return;
  list.replaceChildren(...state.rows.map((r) => h('option', { value: r.name })));
}

function featurePicker() {
  return h('div', { class: 'filters' },
    h('label', {}, 'Feature ',
      h('input', { id: 'feature-pick', list: 'feature-names', value: state.arg, placeholder: 'feature name',
        onchange: (e) => { location.hash = `#/${state.view}/${enc(e.target.value)}`; } })),
    h('datalist', { id: 'feature-names' }, state.rows.map((r) => h('option', { value: r.name }))));
}

async function loadDetail() {
  const view = state.view;
  const name = state.arg;
  if (!name) { state.detail = null; renderDetail(); return; }
  try {
    const data = await api(`features/${enc(name)}/${view}`);
    if (state.view === view && state.arg === name) { state.detail = { view, name, data }; renderDetail(); }
  } catch (e) {
    if (state.view === view && state.arg === name) { state.detail = { view, name, error: e }; renderDetail(); }
  }
}

function renderDetail() {
  const d = state.detail && state.detail.view === state.view && state.detail.name === state.arg ? state.detail : null;
  const title = { readiness: 'Readiness', rollout: 'Rollout', history: 'History' }[state.view];
  const parts = [h('h2', {}, state.arg ? `${title} of ${state.arg}` : title), featurePicker()];
  if (!state.arg) parts.push(h('p', { class: 'muted' }, 'Pick a feature.'));
  else if (!d) parts.push(h('p', { class: 'muted' }, 'Loading…'));
  else if (d.error) parts.push(h('p', { id: 'detail-error', class: 'off' }, `${d.error.code || ''} ${d.error.message}`));
  else if (state.view === 'readiness') parts.push(...readinessView(d.data));
  else if (state.view === 'rollout') parts.push(...rolloutView(d.data));
  else parts.push(...historyView(d.data));
  main().replaceChildren(...parts.filter((p) => p !== null && p !== undefined));
}

function readinessView(r) {
  const row = state.rows.find((x) => x.name === r.feature);
  const allowed = canRelease();
  return [
    h('div', { class: 'cards' },
      card('ready', h('span', { id: 'ready', class: r.ready ? 'on' : 'off' }, r.ready ? 'yes' : 'no')),
      card('blocking', h('span', { id: 'blocker-count' }, r.blockers.length)),
      card('pending activation', row && row.pending ? 'when ready' : 'none'),
      card('revision', r.revision)),
    row ? h('p', {}, 'Requires: ', row.requirements.map((q) => h('code', {}, `${q.service} ${q.version_req}  `))) : null,
    h('span', { class: 'actions' },
      h('button', { class: 'primary', disabled: !allowed, onclick: () => activate(r.feature) }, 'Activate…'),
      row && row.pending ? h('button', { disabled: !allowed, onclick: () => cancelPending(r.feature) }, 'Cancel pending') : null),
    h('h2', {}, 'Blocking instances over time'),
    blockerChart(r.blocker_counts || []),
    h('h2', {}, `Blocking now (${r.blockers.length})`),
    r.blockers.length
      ? h('table', { id: 'blockers' },
        h('thead', {}, h('tr', {}, ['service', 'instance', 'version', 'needs'].map((t) => h('th', {}, t)))),
        h('tbody', {}, r.blockers.slice(0, 1000).map((b) => h('tr', {},
          h('td', {}, b.service), h('td', { class: 'mono' }, b.instance || '(no live instance)'), h('td', { class: 'mono' }, b.version), h('td', { class: 'mono' }, b.requirement)))))
      : h('p', { id: 'no-blockers', class: 'on' }, 'Nothing blocks it: every live instance of every required service has the code.'),
    r.blockers.length > 1000 ? h('p', { class: 'muted' }, `and ${r.blockers.length - 1000} more`) : null,
  ];
}

function blockerChart(points) {
  const W = 640; const H = 140; const P = 28;
  if (points.length === 0) return h('p', { class: 'muted' }, 'No counts yet.');
  const now = Date.now();
  const series = points.concat([{ at_ms: now, blockers: points[points.length - 1].blockers }]);
  const t0 = series[0].at_ms; const t1 = Math.max(now, t0 + 1000);
  const max = Math.max(1, ...series.map((p) => p.blockers));
  const x = (t) => P + (W - 2 * P) * (t - t0) / (t1 - t0);
  const y = (v) => H - P + 8 - (H - P - 8) * v / max;
  let d = '';
  series.forEach((p, i) => { d += i === 0 ? `M${x(p.at_ms)},${y(p.blockers)}` : `H${x(p.at_ms)}V${y(p.blockers)}`; });
  return svg('svg', { class: 'chart', id: 'blocker-chart', width: W, height: H, viewBox: `0 0 ${W} ${H}` },
    svg('line', { x1: P, y1: y(0), x2: W - P, y2: y(0), stroke: '#ccc' }),
    svg('path', { d, fill: 'none', stroke: '#2456c5', 'stroke-width': 2 }),
    svg('text', { x: 2, y: y(max) + 4 }, max),
    svg('text', { x: 2, y: y(0) + 4 }, 0),
    svg('text', { x: P, y: H - 4 }, new Date(t0).toLocaleTimeString()),
    svg('text', { x: W - P - 50, y: H - 4 }, 'now'));
}

function rolloutView(r) {
  const applied = r.instances.filter((i) => i.state === 'APPLIED' || i.state === 1);
  const stateName = (s) => (typeof s === 'string' ? s : ['UNSPECIFIED', 'APPLIED', 'SCHEDULED', 'BEHIND', 'UNKNOWN'][s] || String(s));
  const times = applied.map((i) => i.applied_at_ms).filter((t) => t > 0);
  const spread = times.length ? maxOf(times, times[0]) - minOf(times, times[0]) : 0;
  const lags = times.map((t) => t - r.effective_at_ms);
  const lagging = r.instances.filter((i) => stateName(i.state) !== 'APPLIED' || i.late_ms > 0);
  return [
    h('div', { class: 'cards', id: 'rollout-counts' },
      card('applied', h('span', { id: 'count-applied' }, r.applied)),
      card('scheduled', h('span', { id: 'count-scheduled' }, r.scheduled)),
      card('not received', h('span', { id: 'count-behind' }, r.behind)),
      card('no report', r.unknown),
      card('late', r.late),
      card('flip spread', `${spread} ms`),
      card('max late', `${r.max_late_ms} ms`)),
    h('p', {}, `Change at revision ${r.revision}, effective ${when(r.effective_at_ms)}.`,
      r.unreachable_members.length ? h('span', { class: 'off' }, ` Members not reached: ${r.unreachable_members.join(', ')}.`) : ''),
    h('h2', {}, 'When instances applied it (ms after effective_at)'),
    histogram(lags),
    h('h2', {}, `Not applied yet, or late (${lagging.length})`),
    lagging.length
      ? h('table', { id: 'lagging' },
        h('thead', {}, h('tr', {}, ['instance', 'service', 'version', 'state', 'received revision', 'late', 'via node'].map((t) => h('th', {}, t)))),
        h('tbody', {}, lagging.slice(0, 500).map((i) => h('tr', {},
          h('td', { class: 'mono' }, i.instance_id), h('td', {}, i.service), h('td', { class: 'mono' }, i.version),
          h('td', { class: stateName(i.state) === 'APPLIED' ? 'pending' : 'off' }, stateName(i.state).toLowerCase()),
          h('td', { class: 'num' }, i.received_revision), h('td', { class: 'num' }, i.late_ms ? `${i.late_ms} ms` : ''),
          h('td', { class: 'num' }, i.reported_via || '')))))
      : h('p', { class: 'on' }, 'Every live instance applied it on time.'),
  ];
}

function histogram(values) {
  const W = 640; const H = 150; const P = 28; const BINS = 16;
  if (values.length === 0) return h('p', { class: 'muted' }, 'No instance has reported applying it yet.');
  const lo = minOf(values, values[0]); const hi = maxOf(values, lo + 1);
  const width = Math.max(1, Math.ceil((hi - lo + 1) / BINS));
  const counts = new Array(BINS).fill(0);
  for (const v of values) counts[Math.min(BINS - 1, Math.floor((v - lo) / width))] += 1;
  const max = maxOf(counts, 1);
  const bw = (W - 2 * P) / BINS;
  const bars = counts.map((c, i) => svg('rect', { x: P + i * bw + 1, y: H - P - (H - 2 * P) * c / max, width: bw - 2, height: (H - 2 * P) * c / max, fill: '#2456c5' },
    svg('title', {}, `${lo + i * width}…${lo + (i + 1) * width - 1} ms: ${c}`)));
  return svg('svg', { class: 'chart', id: 'lag-histogram', width: W, height: H, viewBox: `0 0 ${W} ${H}` },
    bars,
    svg('text', { x: P, y: H - 10 }, `${lo} ms`),
    svg('text', { x: W - P - 60, y: H - 10 }, `${lo + BINS * width} ms`),
    svg('text', { x: 2, y: P }, max));
}

function pretty(json) {
  if (!json) return [];
  try { return JSON.stringify(JSON.parse(json), null, 2).split('\n'); } catch (_) { return json.split('\n'); }
}

// A line diff (longest common subsequence; definitions are small).
function diffLines(a, b) {
  const n = a.length; const m = b.length;
  if (n * m > 250000) return [...a.map((l) => ['del', l]), ...b.map((l) => ['add', l])];
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) for (let j = m - 1; j >= 0; j -= 1) L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0; let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push(['same', a[i]]); i += 1; j += 1; } else if (L[i + 1][j] >= L[i][j + 1]) { out.push(['del', a[i]]); i += 1; } else { out.push(['add', b[j]]); j += 1; }
  }
  while (i < n) { out.push(['del', a[i]]); i += 1; }
  while (j < m) { out.push(['add', b[j]]); j += 1; }
  return out;
}

function historyView(r) {
  const allowed = canRelease();
  const entries = r.entries.slice();
  let previous = [];
  const diffs = entries.map((e) => {
    const now = e.definition_json ? pretty(e.definition_json) : null;
    const d = now ? diffLines(previous, now) : null;
    if (now) previous = now;
    return d;
  });
  const rows = entries.map((e, i) => ({ e, diff: diffs[i] })).reverse();
  return [
    h('p', { class: 'muted' }, `${entries.length} changes, newest first.`),
    h('table', { id: 'history' },
      h('thead', {}, h('tr', {}, ['revision', 'when', 'actor', 'change', 'reason', 'definition (diff with the one before)', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.map(({ e, diff }) => h('tr', { 'data-revision': e.revision },
        h('td', { class: 'num' }, e.revision),
        h('td', {}, when(e.at_ms)),
        h('td', { class: 'actor' }, e.actor),
        h('td', {}, e.change),
        h('td', {}, e.reason),
        h('td', {}, diff ? h('div', { class: 'diff' }, diff.filter(([k]) => k !== 'same').length === 0 ? h('span', { class: 'same' }, '(same definition)') : diff.map(([k, l]) => h('span', { class: k }, `${k === 'add' ? '+' : k === 'del' ? '-' : ' '} ${l}`))) : ''),
        h('td', {}, e.definition_json ? h('button', { disabled: !allowed, title: allowed ? 'restore this definition' : 'needs the release role', onclick: () => rollback(state.arg, e.revision) }, 'Roll back to this') : ''))))),
  ];
}

async function loadInstances() {
  const s = state.instances;
  const q = new URLSearchParams({ offset: s.offset, limit: INSTANCE_ROWS });
  if (s.service) q.set('service', s.service);
  if (s.labels) q.set('labels', s.labels);
  if (s.q) q.set('q', s.q);
  s.data = await api(`instances?${q}`);
  if (state.view === 'instances') renderInstances();
}

function renderInstances() {
  const s = state.instances;
  const data = s.data;
  const set = (key) => (e) => { s[key] = e.target.value; s.offset = 0; refresh('instances', loadInstances); };
  const parts = [
    h('h2', {}, 'Instances'),
    h('div', { class: 'filters' },
      h('input', { id: 'instance-service', placeholder: 'service', value: s.service, onchange: set('service') }),
      h('input', { id: 'instance-labels', placeholder: 'labels k=v,k=v', value: s.labels, onchange: set('labels') }),
      h('input', { id: 'instance-q', placeholder: 'id or version contains', value: s.q, onchange: set('q') })),
  ];
  if (!data) { parts.push(h('p', { class: 'muted' }, 'Loading…')); main().replaceChildren(...parts); return; }
  parts.push(
    h('div', { class: 'split' },
      h('div', {},
        pager(data.total, Math.floor(s.offset / INSTANCE_ROWS), INSTANCE_ROWS, (p) => { s.offset = p * INSTANCE_ROWS; refresh('instances', loadInstances); }),
        h('table', { id: 'instances' },
          h('thead', {}, h('tr', {}, ['instance', 'service', 'version', 'labels', 'lease', 'registered'].map((t) => h('th', {}, t)))),
          h('tbody', {}, data.instances.map((i) => h('tr', { 'data-instance': i.id },
            h('td', { class: 'mono' }, i.id), h('td', {}, i.service), h('td', { class: 'mono' }, i.version),
            h('td', { class: 'mono' }, Object.entries(i.labels).map(([k, v]) => `${k}=${v}`).join(' ')),
            h('td', { class: 'mono' }, `${i.lease_id} (ttl ${i.lease_ttl_ms ?? '?'} ms, granted at r${i.lease_granted_revision ?? '?'})`),
            h('td', {}, `revision ${i.registered_revision} (${Math.max(0, state.revision - i.registered_revision)} changes ago)`)))))),
      h('div', {},
        h('h2', {}, 'By service and version'),
        h('table', { id: 'versions' },
          h('thead', {}, h('tr', {}, h('th', {}, 'service'), h('th', {}, 'version'), h('th', { class: 'num' }, 'instances'))),
          h('tbody', {}, data.versions.map((v) => h('tr', {},
            h('td', {}, h('a', { href: '#/instances', onclick: (e) => { e.preventDefault(); s.service = v.service; s.offset = 0; refresh('instances', loadInstances); } }, v.service)),
            h('td', { class: 'mono' }, v.version), h('td', { class: 'num' }, v.count))))))));
  main().replaceChildren(...parts);
}

// ---------------------------------------------------------------- navigation and start

function route() {
  const [, view, ...rest] = (location.hash || '#/features').split('/');
  state.view = ['cluster', 'features', 'readiness', 'rollout', 'history', 'instances'].includes(view) ? view : 'features';
  try { state.arg = rest.length ? decodeURIComponent(rest.join('/')) : ''; } catch (_) { state.arg = ''; }
  renderHeader();
  if (['readiness', 'rollout', 'history'].includes(state.view)) { renderDetail(); refresh('detail', loadDetail); } else if (state.view === 'instances') { renderInstances(); refresh('instances', loadInstances); } else if (state.view === 'cluster' && !state.cluster) {
    renderCluster();
    refresh('cluster', async () => { state.cluster = await api('cluster'); if (state.view === 'cluster') renderCluster(); renderHeader(); });
  } else rerender();
}

async function whoAmI() {
  try { state.who = await api('whoami'); banner(''); } catch (e) { state.who = null; failed(e); }
  renderHeader();
}

function setUpToken() {
  const d = $('token-dialog');
  $('token-button').addEventListener('click', () => { $('token-input').value = ''; d.returnValue = ''; d.showModal(); });
  d.addEventListener('close', () => {
    if (d.returnValue === 'ok') state.token = $('token-input').value.trim();
    if (d.returnValue === 'clear') state.token = '';
    if (d.returnValue === 'ok' || d.returnValue === 'clear') {
      if (state.token) sessionStorage.setItem('switchyard-token', state.token); else sessionStorage.removeItem('switchyard-token');
      location.reload();
    }
  });
}

window.addEventListener('hashchange', route);
setUpToken();
whoAmI().then(() => {
  route();
  refresh('catalog', async () => { await loadCatalog(); rerender(); });
  refresh('cluster', async () => { state.cluster = await api('cluster'); renderHeader(); if (state.view === 'cluster') renderCluster(); });
  follow();
});
