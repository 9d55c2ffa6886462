// interp.js — interpolation between two end points (gallery images by their
// z, uploads by their pixels, which the server encodes (VAE) or inverts
// (GAN, deterministically: seed 0)): a strip of every
// frame, a scrubber, and play (back and forth).
import { call, modelUrl } from './api.js';
import { state, on, $, el, showError } from './state.js';
import { floatsToBlob, showFloats } from './images.js';

let frames = [];   // blob URLs, one per step
let timer = null;
const FPS = 12;

function showEnd(which) {
  const fig = $(`#i-${which}`);
  const e = state.ends[which];
  if (!e) {
    fig.replaceChildren(el('div', { class: 'slot' }, which.toUpperCase()),
      el('figcaption', {}, 'pick in the gallery or upload'));
    return;
  }
  const img = el('img', { class: 'px', alt: `end point ${which.toUpperCase()}` });
  showFloats(img, e.x, e.h, e.w);
  fig.replaceChildren(img, el('figcaption', {}, `${which.toUpperCase()}: ${e.label}`));
}

function seek(k) {
  if (!frames.length) return;
  $('#i-scrub').value = k;
  $('#i-frame').src = frames[k];
  $('#i-pos').textContent = `step ${k + 1} of ${frames.length}`;
  [...$('#i-strip').children].forEach((c, j) => c.classList.toggle('chosen', j === k));
}

function stop() {
  clearInterval(timer);
  timer = null;
  $('#i-play').textContent = 'Play';
}

function play() {
  if (timer) { stop(); return; }
  let k = +$('#i-scrub').value;
  let dir = 1;
  $('#i-play').textContent = 'Pause';
  timer = setInterval(() => {
    if (k + dir < 0 || k + dir >= frames.length) dir = -dir;
    k += dir;
    seek(k);
  }, 1000 / FPS);
}

async function run() {
  const { a, b } = state.ends;
  const m = state.model;
  if (!a || !b) {
    showError($('#i-error'), new Error('Choose two end points first: “Use as A” and “Use as B” in the gallery or under Upload.'));
    return;
  }
  stop();
  try {
    const steps = Math.max(2, Math.min(64, parseInt($('#i-steps').value, 10) || 16));
    const r = await call(modelUrl(m.name, 'interpolate'), {
      body: { from: a.endpoint, to: b.endpoint, steps, method: $('#i-method').value },
    });
    const [, h, w] = r.shape;
    frames.forEach((u) => URL.revokeObjectURL(u));
    frames = await Promise.all(r.images.map(async (x) => URL.createObjectURL(await floatsToBlob(x, h, w))));
    $('#i-strip').replaceChildren(...frames.map((u, k) =>
      el('img', { class: 'px', src: u, alt: `step ${k + 1}`, onclick: () => { stop(); seek(k); } })));
    $('#i-scrub').max = frames.length - 1;
    $('#i-result').hidden = false;
    showError($('#i-error'), null);
    seek(0);
  } catch (e) {
    showError($('#i-error'), e);
  }
}

$('#interp-form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
$('#i-play').addEventListener('click', play);
$('#i-scrub').addEventListener('input', (e) => { stop(); seek(+e.target.value); });
on('ends', () => { showEnd('a'); showEnd('b'); });
on('model', () => {
  stop();
  state.ends = { a: null, b: null };
  showEnd('a');
  showEnd('b');
  $('#i-result').hidden = true;
});
