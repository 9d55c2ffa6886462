// jobs.js — training jobs (admin token): a form for a spec, the list of jobs
// with state, progress, ETA and samples/s, each running job followed through
// its Server-Sent Events, a live loss chart of the chosen job, and cancel.
// When a job succeeds its model is loaded into the model list.
import { call, jobUrl, getToken, followJob } from './api.js';
import { emit, on, $, el, showError, fmtInt } from './state.js';

const PRESETS = {
  vae: {
    default: { label: 'default: 784-128-64, z 20', arch: { hidden: [128, 64], z: 20 } },
    small: { label: 'small: 784-64, z 8', arch: { hidden: [64], z: 8 } },
    wide: { label: 'wide: 784-256-128, z 32', arch: { hidden: [256, 128], z: 32 } },
  },
  gan: {
    default: { label: 'default: G 256-512, D 512-256, z 100', arch: { g_hidden: [256, 512], d_hidden: [512, 256], z: 100 } },
    article: { label: 'article: G 128-128, D 128-128', arch: { arch: 'article' } },
    small: { label: 'small: G 128, D 128, z 32', arch: { g_hidden: [128], d_hidden: [128], z: 32 } },
  },
};
const DEFAULTS = { vae: { epochs: 10, batch: 128, lr: 0.001 }, gan: { epochs: 20, batch: 64, lr: 0.0002 } };
const ACTIVE = new Set(['queued', 'running']);
const COLORS = ['#7c8cff', '#ff9f5a', '#4fd1a5', '#f06292', '#ffd166', '#9ad0ff'];

const jobs = new Map();    // id -> latest record
const streams = new Map(); // id -> AbortController
let chosen = null;         // id shown in the chart
let chart = null;
let evalChart = null;
const list = $('#job-list');

// ---- the form
function fillPresets() {
  const kind = $('#j-kind').value;
  $('#j-preset').replaceChildren(...Object.entries(PRESETS[kind]).map(([k, p]) =>
    el('option', { value: k }, p.label)));
  const d = DEFAULTS[kind];
  $('#j-epochs').value = d.epochs;
  $('#j-batch').value = d.batch;
  $('#j-lr').value = d.lr;
  const name = $('#j-model');
  if (/^my-(vae|gan)$/.test(name.value)) name.value = `my-${kind}`;
}
$('#j-kind').addEventListener('change', fillPresets);
fillPresets();

$('#job-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const kind = $('#j-kind').value;
  const num = (id) => Number($(id).value);
  const spec = {
    kind,
    model: $('#j-model').value.trim(),
    data: $('#j-data').value.trim() || 'fashion-mnist',
    limit: num('#j-limit'),
    arch: PRESETS[kind][$('#j-preset').value].arch,
    train: { epochs: num('#j-epochs'), batch: num('#j-batch'), lr: num('#j-lr'), seed: num('#j-seed') },
  };
  const btn = $('#j-submit');
  btn.disabled = true;
  try {
    const r = await call('/v1/jobs', { body: spec, need: 'admin' });
    showError($('#j-error'), null);
    jobs.set(r.id, { id: r.id, state: r.state, kind, model: spec.model, progress: 0, spec });
    chosen = r.id;
    render();
    follow(r.id);
  } catch (err) {
    showError($('#j-error'), err);
  } finally {
    btn.disabled = false;
  }
});

// ---- the list
function fmtEta(s) {
  if (s === null || s === undefined) return '–';
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function lossText(losses) {
  return Object.entries(losses || {}).map(([k, v]) => `${k} ${(+v).toPrecision(4)}`).join(' · ');
}

// A job's list item, made once and updated in place as events arrive, so a
// button under the pointer is not replaced between press and release.
function jobItem(id) {
  const it = { li: el('li', { class: 'job', dataset: { id } }) };
  const part = (name, tag, props = {}) => { it[name] = el(tag, props); return it[name]; };
  it.li.addEventListener('click', (e) => { if (e.target.tagName !== 'BUTTON') choose(id); });
  it.li.append(
    el('div', { class: 'job-head' }, part('model', 'strong'), part('meta', 'span', { class: 'meta' }),
      part('state', 'span'),
      part('cancel', 'button', { type: 'button', class: 'small danger cancel', onclick: () => cancel(id) }),
      part('open', 'button', { type: 'button', class: 'small open', onclick: () => emit('job-model', jobs.get(id).model) })),
    el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 },
      part('bar', 'div', { class: 'bar' })),
    el('div', { class: 'job-stats' }, part('pct', 'span', { class: 'pct' }), part('stats', 'span')),
    part('losses', 'div', { class: 'meta' }), part('error', 'div', { class: 'error' }),
    part('note', 'div', { class: 'meta' }));
  it.open.textContent = 'Open model';
  return it;
}

function updateItem(it, j) {
  const pct = Math.round((j.progress || 0) * 1000) / 10;
  const active = ACTIVE.has(j.state);
  it.li.dataset.state = j.state;
  it.li.classList.toggle('chosen', j.id === chosen);
  it.model.textContent = j.model;
  it.meta.textContent = ` ${j.id} · ${j.kind || ''}`;
  it.state.textContent = j.state;
  it.state.className = `state state-${j.state}`;
  it.cancel.hidden = !active;
  it.cancel.textContent = j.cancel_requested ? 'Stopping…' : 'Cancel';
  it.open.hidden = j.state !== 'succeeded';
  it.bar.parentNode.setAttribute('aria-valuenow', pct);
  it.bar.style.width = `${pct}%`; // the CSSOM: the policy forbids style attributes
  it.pct.textContent = `${pct}%`;
  it.stats.textContent = ' ' + [
    j.epochs ? `epoch ${j.epoch ?? 0}/${j.epochs}` : null,
    j.steps_total ? `step ${fmtInt(j.step ?? 0)}/${fmtInt(j.steps_total)}` : null,
    j.samples_per_s ? `${fmtInt(Math.round(j.samples_per_s))} samples/s` : null,
    active ? `ETA ${fmtEta(j.eta_s)}` : null,
  ].filter(Boolean).join(' · ');
  it.losses.textContent = lossText(j.losses);
  it.error.textContent = j.error || '';
  it.note.textContent = j.note || '';
  for (const k of ['losses', 'error', 'note']) it[k].hidden = !it[k].textContent;
}

const items = new Map(); // id -> list item parts

function render() {
  const all = [...jobs.values()].sort((a, b) => b.id.localeCompare(a.id));
  if (!chosen && all.length) chosen = all[0].id;
  const lis = all.map((j) => {
    if (!items.has(j.id)) items.set(j.id, jobItem(j.id));
    const it = items.get(j.id);
    updateItem(it, j);
    return it.li;
  });
  // touch the list only when its order changes
  if (lis.length !== list.children.length || lis.some((li, i) => list.children[i] !== li)) {
    list.replaceChildren(...lis);
  }
  if (!all.length) list.replaceChildren(el('li', { class: 'empty' }, 'No jobs yet.'));
  drawChart();
}

// ---- charts
function lineChart(canvas, title) {
  return new window.Chart(canvas, {
    type: 'line',
    data: { datasets: [] },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      interaction: { mode: 'nearest', intersect: false },
      plugins: { title: { display: true, text: title }, legend: { position: 'bottom' } },
      scales: {
        x: { type: 'linear', title: { display: true, text: 'step' } },
        y: { position: 'left' },
        y2: { position: 'right', display: 'auto', grid: { drawOnChartArea: false } },
      },
      elements: { point: { radius: 0 }, line: { borderWidth: 2 } },
    },
  });
}

// One line per loss name.  Losses ten times smaller than the largest (a VAE's
// KL beside its reconstruction term) go on a right-hand axis of their own,
// where their shape stays visible.
function series(history) {
  const keys = Object.keys(history[0] || {}).filter((k) => k !== 'step' && k !== 'epoch');
  const peak = (k) => Math.max(...history.map((p) => Math.abs(p[k])));
  const top = Math.max(...keys.map(peak));
  return keys.map((k, i) => ({
    label: k, borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
    yAxisID: peak(k) * 10 < top ? 'y2' : 'y',
    data: history.map((p) => ({ x: p.step, y: p[k] })),
  }));
}

function drawChart() {
  const j = jobs.get(chosen);
  if (!window.Chart) return;
  if (!chart) chart = lineChart($('#loss-chart'), 'loss');
  $('#chart-title').textContent = j ? `${j.model} (${j.id})` : 'Loss';
  chart.data.datasets = j && j.loss_history ? series(j.loss_history) : [];
  chart.update('none');
  const empty = $('#chart-empty');
  empty.hidden = chart.data.datasets.some((d) => d.data.length);
  const every = j && j.steps_total ? Math.max(1, Math.floor(j.steps_total / 200)) : 0;
  empty.textContent = !j ? 'Start a job, or choose one in the list, to see its losses.'
    : !ACTIVE.has(j.state) ? `It stopped before its first loss point (step ${every || '–'}).`
    : every ? `Its first loss point comes at step ${every}.` : 'No loss points yet.';
  const ev = j && Array.isArray(j.eval_history) ? j.eval_history : null;
  $('#eval-box').hidden = !ev;
  if (ev) {
    if (!evalChart) evalChart = lineChart($('#eval-chart'), 'evaluation');
    evalChart.data.datasets = series(ev);
    evalChart.update('none');
  }
}

// ---- events
async function follow(id) {
  if (streams.has(id)) return;
  const ctl = new AbortController();
  streams.set(id, ctl);
  try {
    await followJob(id, (type, rec) => {
      jobs.set(id, rec);
      render();
      if (type === 'end' && rec.state === 'succeeded') emit('job-succeeded', rec);
    }, ctl.signal);
  } catch (err) {
    if (err.name !== 'AbortError') showError($('#j-error'), err);
  } finally {
    streams.delete(id);
    // a stream cut short (a restart, a proxy): pick the job up again
    const j = jobs.get(id);
    if (!ctl.signal.aborted && j && ACTIVE.has(j.state)) setTimeout(refresh, 2000);
  }
}

// Show job id in the chart, fetching its loss history if no event brought it.
async function choose(id) {
  chosen = id;
  render();
  if (!id || jobs.get(id).loss_history) return;
  try {
    const rec = await call(jobUrl(id), { need: 'admin' });
    if (!jobs.get(id).loss_history) jobs.set(id, rec);
    render();
  } catch (err) {
    showError($('#j-error'), err);
  }
}

async function cancel(id) {
  try {
    const rec = await call(jobUrl(id), { method: 'DELETE', need: 'admin' });
    jobs.set(id, { ...jobs.get(id), ...rec });
    render();
  } catch (err) {
    showError($('#j-error'), err);
  }
}

// Every job, and a stream for each one still queued or running (jobs started
// elsewhere are picked up too).
async function refresh() {
  if (!getToken('admin')) {
    streams.forEach((c) => c.abort());
    jobs.clear();
    items.clear();
    list.replaceChildren(el('li', { class: 'empty' }, 'Type the admin token under Tokens to see and start training jobs.'));
    return;
  }
  try {
    const r = await call('/v1/jobs', { need: 'admin' });
    for (const j of r.jobs) {
      // the list's records carry no loss_history: keep what the stream gave
      const old = jobs.get(j.id);
      jobs.set(j.id, old && old.loss_history && !j.loss_history ? { ...j, loss_history: old.loss_history } : j);
      if (ACTIVE.has(j.state)) follow(j.id);
    }
    choose(jobs.has(chosen) ? chosen : r.jobs.length ? r.jobs[0].id : null);
  } catch (err) {
    showError($('#j-error'), err);
  }
}

on('tokens', refresh);
on('tab', (t) => { if (t === 'jobs') refresh(); });
refresh();
setInterval(() => { if (!document.hidden && getToken('admin')) refresh(); }, 5000);
