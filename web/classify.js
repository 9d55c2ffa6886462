// classify.js — the served classifiers (kind "classifier": they label images
// and cannot sample): the sidebar's list of them, the one in use (a picker in
// the gallery when there are several), and the call that labels images with
// it, shown as "class NN%" under each image and, for a set of samples, as a
// histogram of the top classes (a collapsed model piles into a few).
import { call, modelUrl } from './api.js';
import { state, on, $, el, fmtInt } from './state.js';

function isClassifier(m) {
  return !!m && m.kind === 'classifier';
}

function classifiers() {
  return state.models.filter(isClassifier);
}

// The classifier in use: the one picked, else the first listed; '' when the
// daemon serves none.
export function classifierName() {
  const all = classifiers();
  const picked = $('#g-clf').value;
  return all.some((m) => m.name === picked) ? picked : all.length ? all[0].name : '';
}

// Rows of h*w values in [0,1] -> the classify answer
// {model, classes, predictions: [{label, class, probs}]}.  Values are sent
// with 4 decimals (a pixel is 1/255 apart): a 64-image grid stays ~300 KB.
export async function classify(images) {
  const name = classifierName();
  if (!name) throw new Error('No classifier is served (a model of kind "classifier").');
  const rows = images.map((r) => Array.from(r, (v) => Math.round(v * 1e4) / 1e4));
  return call(modelUrl(name, 'classify'), { body: { images: rows } });
}

// The label element under an image: its top class and that probability.
export function labelOf(pred) {
  const p = pred.probs[pred.label];
  return el('div', {
    class: `cls${p < 0.5 ? ' unsure' : ''}`, title: `${pred.class}: probability ${p.toFixed(3)}`,
    dataset: { class: pred.class, p: String(p) },
  }, el('span', { class: 'cls-name' }, pred.class), ' ', el('span', {}, `${Math.round(p * 100)}%`));
}

// A histogram of the answer's top classes into box: one row per class the
// classifier knows (empty ones too), and a line naming the largest.
export function histogram(box, r) {
  const counts = r.classes.map(() => 0);
  r.predictions.forEach((p) => { counts[p.label]++; });
  const n = r.predictions.length;
  const most = counts.indexOf(Math.max(...counts));
  const used = counts.filter((c) => c > 0).length;
  box.replaceChildren(
    el('p', { class: 'meta' }, `${r.model}: ${fmtInt(n)} images in ${used} of ${r.classes.length} classes; ` +
      `most often ${r.classes[most]} (${counts[most]})`),
    el('ol', { class: 'hist-rows' }, ...r.classes.map((c, k) => {
      const bar = el('span', { class: 'hist-bar' });
      bar.style.width = `${(100 * counts[k]) / Math.max(1, counts[most])}%`; // CSSOM: allowed by the CSP
      return el('li', { dataset: { class: c, count: String(counts[k]) }, class: counts[k] ? '' : 'none' },
        el('span', { class: 'hist-name' }, c), el('span', { class: 'hist-track' }, bar),
        el('span', { class: 'hist-count' }, String(counts[k])));
    })));
  box.hidden = false;
}

// ---- the sidebar's list and the gallery's picker
function render() {
  const all = classifiers();
  $('#clf-head').hidden = !all.length;
  $('#clf-list').replaceChildren(...all.map((m) => el('li', { class: 'clf', dataset: { name: m.name } },
    el('span', { class: 'model-name' }, m.name),
    el('span', { class: 'kind kind-classifier' }, 'CLASSIFIER'),
    el('span', { class: 'model-sub' },
      `${fmtInt(m.parameters)} parameters · ${(m.architecture || {}).classes || '?'} classes · labels images`))));
  const sel = $('#g-clf');
  const keep = classifierName();
  sel.replaceChildren(...all.map((m) => el('option', { value: m.name }, m.name)));
  sel.value = keep;
  $('#g-clf-wrap').hidden = all.length < 2;
  const btn = $('#g-classify');
  btn.disabled = !all.length;
  btn.title = all.length ? `Label the shown samples with ${keep}`
    : 'No classifier is served (a model of kind "classifier")';
}

on('models', render);
$('#g-clf').addEventListener('change', render);
