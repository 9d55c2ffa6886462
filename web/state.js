// state.js — what the page's panels share: the chosen model, the current
// gallery sample (for the explorer and interpolation), and the interpolation
// end points.  Panels listen on `bus` for:
//   'model'   the chosen model changed (detail: the model's record, or null)
//   'models'  the list was reloaded (detail: the list)
//   'picked'  an image was chosen in the gallery (detail: {z, x, label})
//   'ends'    an interpolation end point changed
//   'tab'     a tab was shown (detail: its name)

export const bus = new EventTarget();

export const state = {
  models: [],        // GET /v1/models answers
  model: null,       // the chosen one (GET /v1/models/{name})
  picked: null,      // {z, x, label} of the gallery image in use
  ends: { a: null, b: null }, // interpolation end points: {label, x (for the thumbnail), endpoint}
};

export function emit(name, detail) {
  bus.dispatchEvent(new CustomEvent(name, { detail }));
}

export function on(name, fn) {
  bus.addEventListener(name, (e) => fn(e.detail));
}

// A few DOM helpers used by every panel.
export const $ = (sel, root = document) => root.querySelector(sel);

export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return e;
}

// Show an error (an ApiError or any Error) in a panel's message slot; null clears it.
export function showError(slot, err) {
  slot.textContent = err ? (err.explain ? err.explain() : err.message) : '';
  slot.hidden = !err;
}

export function isGenerator(m) {
  return m && (m.kind === 'vae' || m.kind === 'gan');
}

export function fmtInt(n) {
  return Number(n).toLocaleString('en-US');
}
