// The Switchboard console: one page over the broker's admin port. Reads go
// through /api/console/rpc/<service>/<Method> (the services' gRPC methods,
// with the caller's token) and the live parts through the broker's
// Server-Sent Events stream. Everything is built with textContent: nothing an
// event carries is ever parsed as markup.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem('switchboard-token') || '',
  view: 'live',
  timers: [],
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'onclick') e.addEventListener('click', v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function flash(message, ok) {
  const box = $('flash');
  const m = el('div', { class: 'msg ' + (ok ? 'ok' : 'error'), text: message });
  box.replaceChildren(m);
  setTimeout(() => { if (m.parentNode) m.remove(); }, ok ? 4000 : 10000);
}

function authHeaders() {
  return state.token ? { authorization: 'Bearer ' + state.token } : {};
}

function needToken() {
  $('token-form').hidden = false;
}

// One gRPC method of a service, with its JSON body; throws the service's
// error message.
async function rpc(service, method, body) {
  const r = await fetch(`/api/console/rpc/${service}/${method}`, {
    method: 'POST',
    headers: Object.assign({ 'content-type': 'application/json' }, authHeaders()),
    body: JSON.stringify(body || {}),
  });
  const answer = await r.json().catch(() => ({}));
  if (r.status === 401) needToken();
  if (!r.ok) {
    const e = answer.error || {};
    throw new Error(e.message ? `${e.code}: ${e.message}` : `HTTP ${r.status}`);
  }
  return answer;
}

// Server-Sent Events through fetch, so a token can go in a header; resumes
// with Last-Event-ID after a drop, as EventSource does.
function openStream(params, onEvent, onState) {
  let lastId = params.lastId || '';
  let stopped = false;
  let ctrl = null;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  (async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const q = new URLSearchParams();
        for (const k of ['types', 'correlation_id', 'subject', 'user_id']) {
          if (params[k]) q.set(k, params[k]);
        }
        const headers = authHeaders();
        if (lastId) headers['Last-Event-ID'] = lastId;
        const r = await fetch('/api/events/stream?' + q, { headers, signal: ctrl.signal });
        if (!r.ok) {
          const answer = await r.json().catch(() => ({}));
          if (r.status === 401) needToken();
          onState('error: ' + ((answer.error || {}).message || r.status));
          await sleep(3000);
          continue;
        }
        onState('live');
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let end;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, end);
            buf = buf.slice(end + 2);
            let id = '';
            let data = '';
            for (const line of frame.split('\n')) {
              if (line.startsWith('id: ')) id = line.slice(4);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue;
            if (id) lastId = id;
            onEvent(JSON.parse(data));
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState('reconnecting…');
      await sleep(1000);
    }
  })();
  return { close() { stopped = true; if (ctrl) ctrl.abort(); } };
}

const fmtTime = (t) => (t ? new Date(t).toLocaleTimeString([], { hour12: false }) + '.' +
  String(new Date(t).getMilliseconds()).padStart(3, '0') : '');
const short = (s) => (s || '').replace(/^(JOB_STATUS_|DELIVERY_STATUS_)/, '').toLowerCase();
const ms = (d) => (d ? Math.round(parseFloat(d) * 1000) + ' ms' : '');

function cidLink(cid) {
  if (!cid) return '';
  return el('a', { class: 'cid', href: '#trace/' + encodeURIComponent(cid), text: cid });
}

// ---- Live ------------------------------------------------------------------
const live = {
  stream: null, paused: false, received: 0, held: [],
  perSecond: new Map(),  // unix second -> events
};

function liveRow(ev) {
  return el('tr', { class: 'ev', 'data-type': ev.type, 'data-seq': ev.sequence,
    'data-cid': ev.correlationId, 'data-time': ev.time, 'data-arrived': ev.arrived },
    el('td', { class: 'mono', text: ev.sequence }),
    el('td', { class: 'mono', text: fmtTime(ev.time) }),
    el('td', { text: ev.type }),
    el('td', { text: ev.subject }),
    el('td', {}, cidLink(ev.correlationId)),
    el('td', { text: ev.source }));
}

function showLive(events) {
  const rows = $('live-rows');
  for (const ev of events) rows.prepend(liveRow(ev));
  while (rows.children.length > 200) rows.lastChild.remove();
}

function onLiveEvent(ev) {
  ev.arrived = Date.now();
  live.received++;
  const sec = Math.floor(Date.now() / 1000);
  live.perSecond.set(sec, (live.perSecond.get(sec) || 0) + 1);
  $('live-received').textContent = live.received;
  if (live.paused) {
    live.held.push(ev);
    if (live.held.length > 200) live.held.shift();
  } else {
    showLive([ev]);
  }
}

function drawChart() {
  const c = $('live-chart');
  const g = c.getContext('2d');
  const now = Math.floor(Date.now() / 1000);
  const span = 300;
  let max = 1;
  for (const [s, n] of live.perSecond) {
    if (s < now - span) live.perSecond.delete(s); else max = Math.max(max, n);
  }
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = '#2457c5';
  const w = c.width / span;
  for (let i = 0; i < span; i++) {
    const n = live.perSecond.get(now - span + 1 + i) || 0;
    const h = (n / max) * (c.height - 14);
    g.fillRect(i * w, c.height - h, Math.max(w - 0.5, 0.5), h);
  }
  g.fillStyle = '#68707a';
  g.font = '11px sans-serif';
  g.fillText(`max ${max}/s · last 5 min`, 4, 11);
  $('live-rate').textContent = live.perSecond.get(now - 1) || 0;
}

function startLive() {
  if (live.stream) live.stream.close();
  live.stream = openStream({ types: $('live-types').value.trim() }, onLiveEvent,
    (s) => { $('conn').textContent = 'stream: ' + s; });
}

async function refreshTotals() {
  try {
    const s = await rpc('broker', 'GetStats');
    $('live-total').textContent = s.totalEvents;
  } catch (e) { /* shown by the stream state */ }
}

// ---- Trace -----------------------------------------------------------------
const trace = { cid: '', stream: null, reload: null, poll: null, loading: false, again: false };

function attemptsLine(d) {
  return el('div', { class: 'attempts' }, ...(d.attempts || []).map((a) =>
    el('span', { class: 'attempt', 'data-time': a.time, text: `#${a.attempt} ${a.httpStatus ? 'HTTP ' + a.httpStatus : ''}` +
      ` ${ms(a.latency)}${a.error ? ' ' + a.error : ''}  ` })));
}

// A link within the trace (the URL's hash is the view's route, so it scrolls
// instead of navigating).
function jumpLink(targetId, text) {
  return el('a', { href: '#', class: 'jump', text, onclick: (e) => {
    e.preventDefault();
    const t = document.getElementById(targetId);
    if (t) { t.scrollIntoView({ block: 'center' }); t.classList.add('flash'); setTimeout(() => t.classList.remove('flash'), 1200); }
  } });
}

function renderTrace(events, jobs, deliveries, endpoints, problems) {
  const list = $('trace');
  list.replaceChildren();
  const jobsByCause = new Map();
  for (const j of jobs) {
    if (!jobsByCause.has(j.triggerEventId)) jobsByCause.set(j.triggerEventId, []);
    jobsByCause.get(j.triggerEventId).push(j);
  }
  // A job's lifecycle events (job.enqueued/started/completed...) name it.
  const eventsOfJob = new Map();
  for (const ev of events) {
    const id = ev.data && ev.data.jobId;
    if (!id) continue;
    if (!eventsOfJob.has(id)) eventsOfJob.set(id, []);
    eventsOfJob.get(id).push(ev);
  }
  let open = 0;
  for (const ev of events) {
    const jobId = ev.data && ev.data.jobId;
    const effects = el('ul', { class: 'effects' });
    for (const j of jobsByCause.get(ev.id) || []) {
      if (!/COMPLETED|FAILED/.test(j.status)) open++;
      effects.append(el('li', { class: 'trace-job', id: 'job-' + j.id, 'data-status': j.status, 'data-queue': j.queue },
        el('span', { class: 'kind', text: 'job' }),
        el('b', { text: j.type }), ` on ${j.queue} · `,
        el('span', { class: 'status', text: short(j.status) }),
        ` · attempt ${j.attempt}/${j.maxAttempts} · waited ${j.queueWaitMs} ms · ran ${j.processingTimeMs} ms`,
        j.error ? el('span', { class: 'status-bad', text: ' · ' + j.error }) : null,
        ...(eventsOfJob.get(j.id) || []).map((e) => el('span', {}, ' → ', jumpLink('ev-' + e.sequence, `#${e.sequence} ${e.type}`)))));
    }
    for (const d of deliveries.get(ev.id) || []) {
      if (/PENDING/.test(d.status)) open++;
      const ep = endpoints.get(d.webhookId);
      effects.append(el('li', { class: 'trace-delivery', 'data-status': d.status, 'data-webhook': d.webhookId },
        el('span', { class: 'kind', text: 'webhook' }),
        el('b', { text: ep ? ep.url : d.webhookId }), ' · ',
        el('span', { class: 'status', text: short(d.status) }),
        ` · ${(d.attempts || []).length} attempt(s)`, attemptsLine(d)));
    }
    list.append(el('li', { class: 'trace-event', id: 'ev-' + ev.sequence, 'data-type': ev.type },
      el('span', { class: 'kind', text: 'event' }),
      el('span', { class: 'mono', text: `#${ev.sequence} ${fmtTime(ev.time)} ` }),
      el('b', { text: ev.type }), ` from ${ev.source}`,
      jobId ? el('span', {}, ' · by ', jumpLink('job-' + jobId, 'job ' + jobId)) : null,
      effects));
  }
  $('trace-summary').replaceChildren(el('p', { class: 'stat',
    text: `${events.length} events · ${jobs.length} jobs · ` +
      `${[...deliveries.values()].reduce((n, l) => n + l.length, 0)} webhook deliveries` +
      (open ? ` · ${open} still running` : '') + (problems.length ? ' · ' + problems.join('; ') : '') }));
  return open;
}

// One load at a time: events that arrive meanwhile ask for one more after it.
async function loadTrace() {
  if (trace.loading) { trace.again = true; return; }
  trace.loading = true;
  try {
    await loadTraceOnce();
  } finally {
    trace.loading = false;
    if (trace.again) { trace.again = false; scheduleTraceReload(); }
  }
}

async function loadTraceOnce() {
  const cid = trace.cid;
  if (!cid) return;
  const problems = [];
  let events = [];
  try {
    events = (await rpc('broker', 'GetEventHistory', { correlationId: cid, limit: 1000 })).events || [];
  } catch (e) { problems.push('events: ' + e.message); }
  events.sort((a, b) => Number(a.sequence) - Number(b.sequence));
  let jobs = [];
  try {
    jobs = (await rpc('jobs', 'ListJobs', { correlationId: cid, limit: 1000 })).jobs || [];
  } catch (e) { problems.push('jobs: ' + e.message); }
  const deliveries = new Map();
  const endpoints = new Map();
  try {
    for (const w of (await rpc('webhooks', 'ListWebhooks')).webhooks || []) endpoints.set(w.id, w);
    await Promise.all(events.map(async (ev) => {
      const r = await rpc('webhooks', 'ListDeliveries', { eventId: ev.id, limit: 100 });
      if ((r.deliveries || []).length) deliveries.set(ev.id, r.deliveries);
    }));
  } catch (e) { problems.push('webhooks: ' + e.message); }
  if (cid !== trace.cid) return;  // another trace was opened meanwhile
  const open = renderTrace(events, jobs, deliveries, endpoints, problems);
  $('trace-state').textContent = open ? 'running · updates live' : (events.length ? 'done' : 'no events yet');
}

function scheduleTraceReload() {
  if (trace.reload) return;
  trace.reload = setTimeout(() => { trace.reload = null; loadTrace(); }, 250);
}

function openTrace(cid) {
  if (trace.stream) trace.stream.close();
  clearInterval(trace.poll);
  trace.cid = cid;
  $('trace-cid').value = cid;
  $('trace').replaceChildren();
  $('trace-summary').replaceChildren();
  if (!cid) return;
  loadTrace();
  // New events of the order arrive on the stream; jobs and deliveries
  // change without events (retries, attempts), so they are polled too.
  trace.stream = openStream({ correlation_id: cid }, scheduleTraceReload, () => {});
  trace.poll = setInterval(loadTrace, 2000);
}

// ---- Groups ----------------------------------------------------------------
let dlGroup = '';

async function refreshGroups() {
  let stats;
  try { stats = await rpc('broker', 'GetStats'); } catch (e) { flash(e.message); return; }
  const rows = (stats.groups || []).map((g) => el('tr', { class: 'group', 'data-group': g.name },
    el('td', { text: g.name }), el('td', { text: (g.types || []).join(', ') }),
    el('td', { text: g.members }), el('td', { text: g.pending }), el('td', { text: g.lag }),
    el('td', { text: g.redelivered }), el('td', { class: 'dead', text: g.deadLettered }),
    el('td', { text: g.cursor }),
    el('td', {}, el('button', { 'data-action': 'dead-letters', onclick: () => openDeadLetters(g.name), text: 'Dead letters' }))));
  $('groups-rows').replaceChildren(...rows);
  if (dlGroup) loadDeadLetters();
}

async function replay(sequences) {
  try {
    const r = await rpc('broker', 'ReplayDeadLetters', { group: dlGroup, sequences });
    flash(`replayed ${r.replayed} event(s) to ${dlGroup}`, true);
  } catch (e) { flash(e.message); }
  refreshGroups();
}

async function loadDeadLetters() {
  let r;
  try { r = await rpc('broker', 'ListDeadLetters', { group: dlGroup, limit: 200 }); } catch (e) { flash(e.message); return; }
  $('dl-rows').replaceChildren(...(r.deadLetters || []).map((d) => el('tr', { class: 'dead-letter', 'data-seq': d.event.sequence },
    el('td', { class: 'mono', text: d.event.sequence }), el('td', { text: d.event.type }),
    el('td', { text: d.event.subject }), el('td', {}, cidLink(d.event.correlationId)),
    el('td', { text: d.deliveryAttempts }), el('td', { class: 'last-error', text: d.lastError || '' }),
    el('td', { text: fmtTime(d.deadLetteredAt) }),
    el('td', {}, el('button', { 'data-action': 'replay', onclick: () => replay([d.event.sequence]), text: 'Replay' })))));
}

function openDeadLetters(group) {
  dlGroup = group;
  $('dl-group').textContent = group;
  $('dead-letters').hidden = false;
  loadDeadLetters();
}

// ---- Jobs ------------------------------------------------------------------
async function queueAction(method, queue) {
  try {
    await rpc('jobs', method, { queue });
    flash(`${method === 'PauseQueue' ? 'paused' : 'resumed'} ${queue}`, true);
  } catch (e) { flash(e.message); }
  refreshJobs();
}

async function refreshJobs() {
  let stats;
  try { stats = await rpc('jobs', 'GetStats'); } catch (e) { flash(e.message); return; }
  $('queue-rows').replaceChildren(...(stats.queues || []).map((q) => el('tr', { class: 'queue', 'data-queue': q.name, 'data-paused': q.paused },
    el('td', { text: q.name }), el('td', { class: 'waiting', text: q.waiting }), el('td', { text: q.active }),
    el('td', { text: q.completed }), el('td', { text: q.failed }), el('td', { text: q.retried }),
    el('td', { text: Math.round(q.avgProcessingMs || 0) }), el('td', { text: q.concurrency }),
    el('td', { text: q.paused ? 'paused' : 'running' }),
    el('td', {}, q.paused
      ? el('button', { 'data-action': 'resume', onclick: () => queueAction('ResumeQueue', q.name), text: 'Resume' })
      : el('button', { 'data-action': 'pause', onclick: () => queueAction('PauseQueue', q.name), text: 'Pause' })))));
  const failed = [];
  for (const status of ['JOB_STATUS_FAILED', 'JOB_STATUS_RETRY_SCHEDULED']) {
    try { failed.push(...((await rpc('jobs', 'ListJobs', { status, limit: 20 })).jobs || [])); } catch (e) { /* shown above */ }
  }
  $('failure-rows').replaceChildren(...failed.map((j) => el('tr', { 'data-status': j.status },
    el('td', { class: 'mono', text: j.id }), el('td', { text: j.queue }),
    el('td', {}, el('span', { class: 'status', text: short(j.status) })),
    el('td', { text: `${j.attempt}/${j.maxAttempts}` }), el('td', { text: j.error }),
    el('td', {}, cidLink(j.correlationId)))));
}

// ---- Webhooks --------------------------------------------------------------
let dvWebhook = '';

async function refreshWebhooks() {
  let hooks;
  try { hooks = (await rpc('webhooks', 'ListWebhooks')).webhooks || []; } catch (e) { flash(e.message); return; }
  const select = $('test-webhook');
  const chosen = select.value;
  select.replaceChildren(...hooks.map((w) => el('option', { value: w.id, text: w.url })));
  if (chosen) select.value = chosen;
  const rows = await Promise.all(hooks.map(async (w) => {
    let ds = [];
    try { ds = (await rpc('webhooks', 'ListDeliveries', { webhookId: w.id, limit: 100 })).deliveries || []; } catch (e) { /* none */ }
    const ok = ds.filter((d) => d.status === 'DELIVERY_STATUS_DELIVERED').length;
    const bad = ds.filter((d) => d.status === 'DELIVERY_STATUS_FAILED').length;
    const pending = ds.length - ok - bad;
    return el('tr', { class: 'endpoint', 'data-webhook': w.id },
      el('td', {}, el('div', { text: w.url }), el('div', { class: 'stat mono', text: w.id })),
      el('td', { text: (w.events || []).join(', ') }),
      el('td', { class: w.active ? 'status-ok' : 'status-bad', text: w.active ? 'active' : 'disabled: ' + (w.disabledReason || '') }),
      el('td', { text: ok + bad ? `${Math.round((100 * ok) / (ok + bad))}% (${ok}/${ok + bad})` : '–' }),
      el('td', { text: pending }),
      el('td', {}, el('button', { 'data-action': 'deliveries', onclick: () => openDeliveries(w), text: 'Deliveries' })));
  }));
  $('endpoint-rows').replaceChildren(...rows);
  if (dvWebhook) loadDeliveries();
}

async function redeliver(d) {
  try {
    const r = await rpc('webhooks', 'RedeliverEvent', { eventId: d.eventId, webhookId: d.webhookId });
    flash(`redelivering ${d.eventId} (${(r.deliveries || []).length} delivery)`, true);
  } catch (e) { flash(e.message); }
  loadDeliveries();
}

async function loadDeliveries() {
  let ds;
  try { ds = (await rpc('webhooks', 'ListDeliveries', { webhookId: dvWebhook, limit: 50 })).deliveries || []; } catch (e) { flash(e.message); return; }
  $('dv-rows').replaceChildren(...ds.map((d) => el('tr', { class: 'delivery', 'data-status': d.status, 'data-event': d.eventId },
    el('td', { class: 'mono', text: d.eventId }), el('td', { text: d.eventType }),
    el('td', {}, el('span', { class: 'status', text: short(d.status) })),
    el('td', {}, attemptsLine(d)), el('td', { text: fmtTime(d.createdAt) }),
    el('td', {}, el('button', { 'data-action': 'redeliver', onclick: () => redeliver(d), text: 'Redeliver' })))));
}

function openDeliveries(w) {
  dvWebhook = w.id;
  $('dv-endpoint').textContent = w.url;
  $('deliveries').hidden = false;
  loadDeliveries();
}

// ---- Navigation ------------------------------------------------------------
const refreshers = { groups: [refreshGroups, 3000], jobs: [refreshJobs, 2000], webhooks: [refreshWebhooks, 4000] };

function route() {
  const [view, ...rest] = (location.hash.slice(1) || 'live').split('/');
  state.view = refreshers[view] || view === 'trace' ? view : 'live';
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== 'view-' + state.view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === state.view);
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.view !== 'trace') openTrace('');
  if (refreshers[state.view]) {
    const [fn, every] = refreshers[state.view];
    fn();
    state.timers.push(setInterval(fn, every));
  }
  if (state.view === 'trace') {
    const cid = decodeURIComponent(rest.join('/'));
    if (cid !== trace.cid) openTrace(cid);
  }
}

$('live-apply').addEventListener('click', startLive);
$('live-pause').addEventListener('click', () => {
  live.paused = !live.paused;
  $('live-pause').textContent = live.paused ? 'Resume' : 'Pause';
  if (!live.paused) { showLive(live.held); live.held = []; }
});
$('trace-form').addEventListener('submit', (e) => {
  e.preventDefault();
  location.hash = '#trace/' + encodeURIComponent($('trace-cid').value.trim());
});
$('dl-replay-all').addEventListener('click', () => replay([]));
$('test-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const r = await rpc('webhooks', 'SendTestEvent', { webhookId: $('test-webhook').value, eventType: $('test-type').value.trim() });
    flash(`test event queued as delivery ${r.delivery.id}`, true);
  } catch (err) { flash(err.message); }
  refreshWebhooks();
});
$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem('switchboard-token', state.token);
  $('token-form').hidden = true;
  startLive();
  route();
});
window.addEventListener('hashchange', route);
startLive();
route();
refreshTotals();
setInterval(refreshTotals, 5000);
setInterval(drawChart, 1000);
