// app.js — the page's entry: tokens, the notice line, the model list and the
// chosen model's details, the tabs; each tab is its own module.
import { call, modelUrl, getToken, setToken, tokenFor, onAuthError } from './api.js';
import { state, emit, on, $, el, showError, fmtInt, isGenerator } from './state.js';
import './classify.js';
import './gallery.js';
import './explore.js';
import './interp.js';
import './upload.js';
import './jobs.js';

// ---- charts (Chart.js, loaded before this module) in the page's colours
if (window.Chart) {
  window.Chart.defaults.color = '#8d97ab';
  window.Chart.defaults.borderColor = '#2a3244';
  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
}

// ---- notice: 401/403 and other page-wide messages
const notice = $('#notice');
function say(text, kind = 'error') {
  notice.textContent = text;
  notice.className = `notice ${kind}`;
  notice.hidden = !text;
}

// ---- tokens
const tokForm = $('#tokens');
const tokBtn = $('#tokens-btn');
function showTokenState() {
  const i = getToken('inference');
  const a = getToken('admin');
  $('#token-state').textContent = `inference ${i ? '●' : '○'}  admin ${a ? '●' : '○'}`;
  $('#token-state').title = `inference token ${i ? 'set' : 'not set'}, admin token ${a ? 'set' : 'not set'}`;
}
function toggleTokens(open) {
  tokForm.hidden = !open;
  tokBtn.setAttribute('aria-expanded', String(open));
  if (open) {
    $('#tok-inference').value = getToken('inference');
    $('#tok-admin').value = getToken('admin');
    $('#tok-inference').focus();
  }
}
tokBtn.addEventListener('click', () => toggleTokens(tokForm.hidden));
// a 401 with no token typed: open the fields, so the fix is in view
onAuthError((err) => {
  say(err.explain());
  if (err.status === 401 && !tokenFor(err.need) && tokForm.hidden) toggleTokens(true);
});
tokForm.addEventListener('submit', (e) => {
  e.preventDefault();
  setToken('inference', $('#tok-inference').value.trim());
  setToken('admin', $('#tok-admin').value.trim());
  toggleTokens(false);
  showTokenState();
  say('');
  emit('tokens');
  loadModels();
});
$('#tok-clear').addEventListener('click', () => {
  $('#tok-inference').value = '';
  $('#tok-admin').value = '';
});

// ---- models
const list = $('#model-list');
const known = new Set(); // names seen, to mark the ones that appear later
let firstLoad = true;

function modelItem(m) {
  const chosen = state.model && state.model.name === m.name;
  const fresh = !firstLoad && !known.has(m.name);
  return el('li', {},
    el('button', {
      type: 'button', class: `model${chosen ? ' chosen' : ''}${fresh ? ' fresh' : ''}`,
      dataset: { name: m.name }, 'aria-pressed': String(chosen),
      onclick: () => choose(m.name),
    },
    el('span', { class: 'model-name' }, m.name),
    el('span', { class: `kind kind-${m.kind}` }, m.kind.toUpperCase()),
    el('span', { class: 'model-sub' }, `${fmtInt(m.parameters)} parameters · z ${m.latent_size || '–'}`),
    fresh ? el('span', { class: 'badge' }, 'new') : null));
}

// Only the models that sample (VAE, GAN) can be chosen; classifiers are
// listed apart by classify.js.
function renderList() {
  const gens = state.models.filter(isGenerator);
  list.replaceChildren(...gens.map(modelItem));
  if (!gens.length) list.append(el('li', { class: 'empty' }, 'No model that samples is loaded.'));
}

export async function loadModels() {
  try {
    const { models } = await call('/v1/models');
    state.models = models.sort((a, b) => a.name.localeCompare(b.name));
    showError($('#models-error'), null);
    renderList();
    state.models.forEach((m) => known.add(m.name));
    firstLoad = false;
    emit('models', state.models);
    const still = state.model && state.models.find((m) => m.name === state.model.name);
    if (!still) {
      // the model named in the address (#name, kept across reloads), else the
      // first that can sample
      const wanted = decodeURIComponent(location.hash.slice(1));
      const gens = state.models.filter(isGenerator);
      const first = gens.find((m) => m.name === wanted) || gens[0];
      if (first) await choose(first.name);
      else setModel(null);
    } else if (still.version !== state.model.version) {
      await choose(still.name); // replaced by a job or a PUT: reload its details
    }
  } catch (err) {
    showError($('#models-error'), err);
  }
}

function setModel(m) {
  state.model = m;
  if (m) history.replaceState(null, '', `#${encodeURIComponent(m.name)}`);
  $('#current').textContent = m ? `${m.name} · ${m.kind.toUpperCase()}` : 'no model chosen';
  renderList();
  renderDetail(m);
  emit('model', m);
}

async function choose(name) {
  try {
    setModel(await call(modelUrl(name)));
  } catch (err) {
    showError($('#models-error'), err);
  }
}

// The layer table of an architecture: "784 → 128 → 64 → z 20" per net.
function layerRows(m) {
  const a = m.architecture || {};
  const [h, w] = a.image || m.image_shape || [28, 28];
  const px = h * w;
  const chain = (xs) => xs.join(' → ');
  const rows = [];
  if (m.kind === 'vae') {
    rows.push(['encoder', chain([px, ...a.encoder, `μ, log σ² ${a.z}`])]);
    rows.push(['decoder', chain([`z ${a.z}`, ...a.decoder, px])]);
  } else if (m.kind === 'gan') {
    rows.push(['generator', chain([`z ${a.z}`, ...a.generator, px])]);
    rows.push(['discriminator', chain([px, ...a.discriminator, 1])]);
  }
  const act = a.activation === 'leaky_relu' ? `leaky ReLU ${a.slope}` : a.activation;
  if (act) rows.push(['activation', act + (a.dropout ? `, dropout ${a.dropout}` : '')]);
  return rows;
}

// Record values are strings; those holding JSON objects (final_losses) are
// shown as name = value pairs.
function recordValue(v) {
  if (typeof v === 'string' && v.startsWith('{')) {
    try {
      return Object.entries(JSON.parse(v)).map(([k, x]) =>
        `${k} ${typeof x === 'number' ? +x.toPrecision(5) : x}`).join(' · ');
    } catch (e) { /* plain text */ }
  }
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const EVAL_KEY = /eval|elbo|nll|fid|frechet|accuracy|class_share/i;

function table(rows) {
  return el('table', { class: 'kv' }, ...rows.map(([k, v]) =>
    el('tr', {}, el('th', {}, k), el('td', {}, v))));
}

function renderDetail(m) {
  const box = $('#model-detail');
  box.hidden = !m;
  if (!m) return;
  const rec = Object.entries(m.record || {});
  const evals = rec.filter(([k]) => EVAL_KEY.test(k));
  const train = rec.filter(([k]) => !EVAL_KEY.test(k));
  box.replaceChildren(
    el('summary', {}, el('h2', {}, m.name),
      el('span', { class: `kind kind-${m.kind}` }, m.kind.toUpperCase())),
    el('p', { class: 'meta' }, m.description || ''),
    el('h3', {}, 'Architecture'), table(layerRows(m)),
    table([['parameters', fmtInt(m.parameters)], ['file', m.file],
      ['sha256', (m.sha256 || '').slice(0, 16) + '…'], ['version', String(m.version)],
      ['loaded', m.loaded_at]]),
    el('h3', {}, 'Training record'),
    train.length ? table(train.map(([k, v]) => [k.replace(/_/g, ' '), recordValue(v)]))
                 : el('p', { class: 'empty' }, 'No training record in this file.'),
    el('h3', {}, 'Evaluation'),
    evals.length ? table(evals.map(([k, v]) => [k.replace(/_/g, ' '), recordValue(v)]))
                 : el('p', { class: 'empty' },
                   'No evaluation figures in this file (latentd eval prints them).'));
}

// On a narrow screen the details start folded, so the gallery is in view.
if (matchMedia('(max-width: 860px)').matches) $('#model-detail').open = false;

$('#models-reload').addEventListener('click', loadModels);
on('job-succeeded', loadModels);
on('job-model', (name) => loadModels().then(() => choose(name)));

// ---- tabs
const tabs = [...document.querySelectorAll('[role=tab]')];
function showTab(name) {
  for (const t of tabs) {
    const sel = t.dataset.tab === name;
    t.setAttribute('aria-selected', String(sel));
    $(`#tab-${t.dataset.tab}`).hidden = !sel;
  }
  emit('tab', name);
}
tabs.forEach((t) => t.addEventListener('click', () => showTab(t.dataset.tab)));
on('show-tab', showTab);

// ---- start: the list now, and again every 10 s while the page is visible,
// so models that appear on the server (a job started elsewhere) show up
showTokenState();
loadModels();
setInterval(() => { if (!document.hidden) loadModels(); }, 10000);
