// gallery.js — a grid of samples (n, seed, temperature; a class picker when
// the model lists classes), each image with its seed and row; the chosen one
// can be downloaded (PNG or .npy, decoded by the server from its z), explored
// or used as an interpolation end point.  "Classify" labels the shown
// samples with a served classifier: a class under each, a histogram above.
import { call, modelUrl } from './api.js';
import { state, emit, on, $, el, showError, isGenerator } from './state.js';
import { showFloats, saveBlob } from './images.js';
import { classify, classifierName, labelOf, histogram } from './classify.js';

const grid = $('#gallery');
const err = $('#g-error');
let shown = null;   // the last answer: {seed, temperature, z, images, model}
let seq = 0;        // answers older than the latest request are dropped
let picked = -1;

function params() {
  return {
    n: Math.max(1, Math.min(256, parseInt($('#g-n').value, 10) || 64)),
    seed: Math.max(0, parseInt($('#g-seed').value, 10) || 0),
    temperature: Math.max(0, parseFloat($('#g-temp').value) || 0),
  };
}

async function sample() {
  const m = state.model;
  if (!isGenerator(m)) {
    grid.replaceChildren(el('p', { class: 'empty' },
      m ? `${m.name} is a ${m.kind}: it has no latent space to sample.` : 'Choose a model.'));
    return;
  }
  const p = params();
  const body = { n: p.n, seed: p.seed, temperature: p.temperature };
  if (Array.isArray(m.classes) && $('#g-class').value !== '') body.class = +$('#g-class').value;
  const mine = ++seq;
  grid.classList.add('busy');
  const t0 = performance.now();
  try {
    const r = await call(modelUrl(m.name, 'sample'), { body });
    if (mine !== seq) return;
    showError(err, null);
    shown = { ...r, model: m.name, shape: r.shape };
    await render(r, performance.now() - t0);
  } catch (e) {
    if (mine === seq) showError(err, e);
  } finally {
    if (mine === seq) grid.classList.remove('busy');
  }
}

async function render(r, ms) {
  const [n, h, w] = r.shape;
  // reuse the <img> elements: the grid does not jump while new pixels load
  while (grid.children.length > n) grid.lastChild.remove();
  while (grid.children.length < n) {
    const i = grid.children.length;
    grid.append(el('figure', { class: 'tile', dataset: { row: i } },
      el('img', { class: 'px', alt: '', onclick: () => pick(i) }),
      el('figcaption', {}), el('div', { class: 'cls' })));
  }
  unlabel();
  await Promise.all(r.images.map(async (row, i) => {
    const fig = grid.children[i];
    const img = fig.firstChild;
    img.alt = `sample ${i} of seed ${r.seed}`;
    img.title = `seed ${r.seed}, row ${i}`;
    fig.children[1].textContent = `${r.seed}·${i}`;
    await showFloats(img, row, h, w);
  }));
  $('#g-meta').textContent = `seed ${r.seed} · temperature ${r.temperature} · ${n} images in ${Math.round(ms)} ms`;
  if (picked >= 0 && picked < n) pick(picked);
  else $('#g-picked').hidden = true;
}

// Labels belong to the images they were made for: a new grid drops them.
function unlabel() {
  [...grid.children].forEach((f) => f.lastChild.replaceWith(el('div', { class: 'cls' })));
  $('#g-hist').hidden = true;
}

async function label() {
  const mine = shown;
  if (!mine) return;
  const btn = $('#g-classify');
  btn.disabled = true;
  try {
    const r = await classify(mine.images);
    if (mine !== shown) return; // another grid came meanwhile
    r.predictions.forEach((p, i) => grid.children[i].lastChild.replaceWith(labelOf(p)));
    histogram($('#g-hist'), r);
    showError(err, null);
  } catch (e) {
    showError(err, e);
  } finally {
    btn.disabled = !classifierName();
  }
}

function pick(i) {
  picked = i;
  [...grid.children].forEach((f, j) => f.classList.toggle('chosen', j === i));
  const [, h, w] = shown.shape;
  const label = `seed ${shown.seed}, row ${i}`;
  state.picked = { z: shown.z[i], x: shown.images[i], label, h, w };
  $('#g-picked').hidden = false;
  $('#g-picked-label').textContent = `${shown.model} · ${label} · temperature ${shown.temperature}`;
  showFloats($('#g-picked-img'), shown.images[i], h, w);
  emit('picked', state.picked);
}

async function download(format) {
  const p = state.picked;
  const m = state.model;
  try {
    const blob = await call(modelUrl(m.name, 'decode'),
      { body: { z: [p.z], format, pad: 0 }, as: 'blob' });
    saveBlob(blob, `${m.name}-seed${shown.seed}-row${picked}.${format}`);
    showError(err, null);
  } catch (e) {
    showError(err, e);
  }
}

function useAs(which) {
  const p = state.picked;
  state.ends[which] = { label: p.label, x: p.x, h: p.h, w: p.w, endpoint: { z: p.z } };
  emit('ends');
}

$('#gallery-form').addEventListener('submit', (e) => { e.preventDefault(); sample(); });
$('#g-new').addEventListener('click', () => {
  $('#g-seed').value = Math.floor(Math.random() * 1e9);
  sample();
});
$('#g-class').addEventListener('change', sample);
$('#g-classify').addEventListener('click', label);
$('#g-png').addEventListener('click', () => download('png'));
$('#g-npy').addEventListener('click', () => download('npy'));
$('#g-explore').addEventListener('click', () => emit('show-tab', 'explore'));
$('#g-as-a').addEventListener('click', () => useAs('a'));
$('#g-as-b').addEventListener('click', () => useAs('b'));

on('model', (m) => {
  shown = null;
  picked = -1;
  state.picked = null;
  $('#g-picked').hidden = true;
  grid.replaceChildren();
  $('#g-hist').hidden = true;
  // a class picker only for a model that names its classes
  const classes = m && Array.isArray(m.classes) ? m.classes : null;
  $('#g-class-wrap').hidden = !classes;
  if (classes) {
    $('#g-class').replaceChildren(el('option', { value: '' }, 'any'),
      ...classes.map((c, i) => el('option', { value: i }, typeof c === 'string' ? c : c.name)));
  }
  sample();
});
