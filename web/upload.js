// upload.js — drop or choose an image; the browser makes it the model's
// grayscale input, and the VAE answers with its reconstruction and latent
// means (a bar chart), a GAN with its inversion: the latent z found for it
// (seed 0, the seed the server inverts end points with) and G(z).  Either
// can then be an interpolation end point.  A file the browser cannot read
// is sent as it is, so the server's message says what is wrong with it;
// every error stays on the upload's own card.  "Classify" labels the input
// and the model's answer with a served classifier.
import { call, modelUrl } from './api.js';
import { state, emit, on, $, el } from './state.js';
import { fileToFloats, fileToBase64, showFloats, showBlob } from './images.js';
import { classify, labelOf } from './classify.js';

const results = $('#u-results');
const MAX_CARDS = 6;

function barChart(canvas, mu, title = 'latent means μ') {
  return new window.Chart(canvas, {
    type: 'bar',
    data: {
      labels: mu.map((_, i) => `z${i}`),
      datasets: [{ label: title, data: mu, backgroundColor: '#7c8cff', borderRadius: 2 }],
    },
    options: {
      animation: false, maintainAspectRatio: false,
      plugins: { legend: { display: false }, title: { display: true, text: title } },
      scales: { x: { ticks: { font: { size: 9 } } } },
    },
  });
}

async function handle(file) {
  const m = state.model;
  const [h, w] = (m && m.image_shape) || [28, 28];
  const input = el('img', { class: 'px', alt: 'the input, 28×28 grayscale' });
  const recon = el('img', { class: 'px', alt: 'its reconstruction' });
  const msg = el('p', { class: 'error', role: 'status' });
  msg.hidden = true;
  const canvas = el('canvas', {});
  const actions = el('div', { class: 'row' });
  const card = el('article', { class: 'card upload' },
    el('header', {}, el('strong', {}, file.name), el('span', { class: 'meta' },
      ` ${file.size < 1024 ? `${file.size} bytes` : `${(file.size / 1024).toFixed(1)} KiB`} · ${m ? m.name : 'no model'}`)),
    el('div', { class: 'pair' },
      el('figure', {}, input, el('figcaption', {}, 'input')),
      el('figure', {}, recon, el('figcaption', {}, 'reconstruction')),
      el('div', { class: 'bars' }, canvas)),
    msg, actions);
  results.prepend(card);
  while (results.children.length > MAX_CARDS) results.lastChild.remove();
  const fail = (text) => { msg.textContent = text; msg.hidden = false; card.classList.add('failed'); };
  if (!m) { fail('Choose a model first.'); return; }

  let x = null;
  let sent;
  try {
    const r = await fileToFloats(file, h, w, $('#u-invert-auto').checked ? 'auto' : false);
    x = r.x;
    await showFloats(input, x, h, w);
    if (r.inverted) card.querySelector('figcaption').textContent = 'input (inverted)';
    sent = { images: [x] };
  } catch (e) {
    // not an image the browser can decode: let the server say why
    input.replaceWith(el('div', { class: 'slot' }, '?'));
    sent = { png: [await fileToBase64(file)] };
  }
  const gan = m.kind === 'gan';
  let answer; // the model's answer as floats, for Classify
  try {
    if (gan) {
      const inv = await call(modelUrl(m.name, 'invert'), { body: { ...sent, seed: 0 } });
      answer = async () => inv.images[0];
      await showFloats(recon, inv.images[0], h, w);
      card.querySelectorAll('figcaption')[1].textContent = `inversion G(z), MSE ${inv.mse[0].toFixed(4)}`;
      barChart(canvas, inv.z[0], 'latent z found by inversion');
    } else {
      const [png, enc] = await Promise.all([
        call(modelUrl(m.name, 'reconstruct'), { body: { ...sent, format: 'png', pad: 0 }, as: 'blob' }),
        call(modelUrl(m.name, 'encode'), { body: sent }),
      ]);
      answer = async () => (await fileToFloats(png, h, w, false)).x;
      showBlob(recon, png);
      barChart(canvas, enc.mu[0]);
    }
    // the server encodes (VAE) or inverts (GAN) an image end point itself
    const use = (which) => {
      state.ends[which] = { label: gan ? `${file.name} (inverted)` : file.name, x, h, w,
        endpoint: { image: x } };
      emit('ends');
    };
    const label = async (e) => {
      const btn = e.target;
      btn.disabled = true;
      try {
        const r = await classify([x, await answer()]);
        card.querySelectorAll('.pair figure').forEach((f, i) => {
          f.querySelector('.cls')?.remove();
          f.append(labelOf(r.predictions[i]));
        });
        msg.hidden = true;
      } catch (err) {
        msg.textContent = err.explain ? err.explain() : err.message;
        msg.hidden = false;
      } finally {
        btn.disabled = false;
      }
    };
    if (x) {
      actions.append(el('button', { type: 'button', onclick: () => use('a') }, 'Use as A'),
        el('button', { type: 'button', onclick: () => use('b') }, 'Use as B'),
        el('button', { type: 'button', class: 'classify', onclick: label,
          title: 'Label the input and the answer with a served classifier' }, 'Classify'));
    }
  } catch (e) {
    recon.replaceWith(el('div', { class: 'slot' }, '×'));
    canvas.remove();
    fail(e.explain ? e.explain() : e.message);
  }
}

const drop = $('#drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  [...e.dataTransfer.files].forEach(handle);
});
$('#u-file').addEventListener('change', (e) => {
  [...e.target.files].forEach(handle);
  e.target.value = '';
});

on('model', (m) => {
  const ok = m && (m.kind === 'vae' || m.kind === 'gan');
  drop.classList.toggle('disabled', !ok);
  drop.title = ok ? '' : 'Upload needs a VAE (encoded) or a GAN (inverted); the server will say so.';
});
