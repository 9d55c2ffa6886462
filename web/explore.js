// explore.js — the latent explorer: sliders for the first latent dimensions of
// the chosen gallery image, the image decoded again as they move.  At most
// one decode is in flight: moves made meanwhile are coalesced into the next
// request, which carries only the latest z, so a fast drag never queues up
// stale work; a new image or model aborts the request in flight.
import { call, modelUrl } from './api.js';
import { state, on, $, el, showError } from './state.js';
import { showBlob } from './images.js';

const DIMS = 16;   // sliders shown (at least 8 are asked for; the VAE has 20)
const RANGE = 3;   // each slider spans base ± RANGE standard deviations

let base = null;   // the picked image's z
let z = null;      // the z being shown
let inflight = null; // AbortController of the request in flight
let dirty = false; // z changed while a request was in flight
let stats = { sent: 0, coalesced: 0, ms: 0 };

async function decode() {
  if (inflight) { // coalesce: the answer's handler sends the latest z
    dirty = true;
    stats.coalesced++;
    return;
  }
  const m = state.model;
  const ctl = new AbortController();
  inflight = ctl;
  dirty = false;
  stats.sent++;
  const t0 = performance.now();
  try {
    const blob = await call(modelUrl(m.name, 'decode'),
      { body: { z: [z], format: 'png', pad: 0 }, as: 'blob', signal: ctl.signal });
    if (ctl.signal.aborted) return;
    stats.ms = performance.now() - t0;
    showBlob($('#x-img'), blob);
    showError($('#x-error'), null);
    $('#x-meta').textContent = `${stats.sent} decodes · ${stats.coalesced} moves coalesced · last ${stats.ms.toFixed(1)} ms`;
  } catch (e) {
    if (e.name !== 'AbortError') showError($('#x-error'), e);
  } finally {
    if (inflight === ctl) {
      inflight = null;
      if (dirty) decode();
    }
  }
}

function abort() {
  if (inflight) inflight.abort();
  inflight = null;
  dirty = false;
}

function slider(i) {
  const v = el('output', {}, z[i].toFixed(2));
  const input = el('input', {
    type: 'range', min: (base[i] - RANGE).toFixed(3), max: (base[i] + RANGE).toFixed(3),
    step: '0.01', value: z[i], 'aria-label': `latent dimension ${i}`, dataset: { dim: i },
    oninput: (e) => {
      z[i] = parseFloat(e.target.value);
      v.textContent = z[i].toFixed(2);
      decode();
    },
  });
  return el('label', { class: 'slider' }, el('span', { class: 'dim' }, `z${i}`), input, v);
}

function build() {
  const p = state.picked;
  $('#x-empty').hidden = !!p;
  $('#x-body').hidden = !p;
  if (!p) return;
  abort();
  base = p.z.slice();
  z = base.slice();
  stats = { sent: 0, coalesced: 0, ms: 0 };
  const n = Math.min(DIMS, z.length);
  $('#x-sliders').replaceChildren(
    el('p', { class: 'meta' }, `${p.label}: the first ${n} of ${z.length} latent dimensions`),
    ...Array.from({ length: n }, (_, i) => slider(i)));
  decode();
}

$('#x-reset').addEventListener('click', build);
$('#x-random').addEventListener('click', () => {
  const inputs = [...$('#x-sliders').querySelectorAll('input')];
  inputs.forEach((inp) => {
    const i = +inp.dataset.dim;
    z[i] = base[i] + (Math.random() * 2 - 1) * RANGE * 0.6;
    inp.value = z[i];
    inp.nextSibling.textContent = z[i].toFixed(2);
  });
  decode();
});

on('picked', build);
on('model', () => { abort(); state.picked = null; build(); });
