// api.js — every call the page makes to the daemon: the bearer tokens (kept in
// sessionStorage, sent only in the Authorization header, never in a URL), the
// JSON error bodies turned into ApiError, and the jobs' Server-Sent Events read
// with fetch and a stream reader (EventSource cannot send Authorization).

const KEYS = { inference: 'latentd.token', admin: 'latentd.admin' };

export function getToken(which) {
  return sessionStorage.getItem(KEYS[which]) || '';
}

export function setToken(which, value) {
  if (value) sessionStorage.setItem(KEYS[which], value);
  else sessionStorage.removeItem(KEYS[which]);
}

// The token a call sends: the admin token for admin routes; for the others
// the inference token, or the admin token when only that one is set (the
// daemon accepts it there).
export function tokenFor(need) {
  return need === 'admin' ? getToken('admin') : getToken('inference') || getToken('admin');
}

// An answer other than 2xx: status, the server's code and message, and which
// token the call needed ('inference' or 'admin').
export class ApiError extends Error {
  constructor(status, code, message, need) {
    super(message);
    this.status = status;
    this.code = code;
    this.need = need;
  }

  // The text shown to a person: for 401 and 403, which token to type.
  explain() {
    const name = this.need === 'admin' ? 'admin token' : 'inference token';
    if (this.status === 401) {
      return tokenFor(this.need) ? `401: the ${name} was not accepted (${this.message}). Check it under Tokens.`
                   : `401: this needs the ${name}; none is set. Type it under Tokens.`;
    }
    if (this.status === 403) return `403: ${this.message}. This needs the ${name}.`;
    if (this.status === 0) return this.message;
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

// The URL of a model's route (op: 'sample', 'decode', ...; none: the model)
// and of a job's.
export function modelUrl(name, op) {
  return `/v1/models/${encodeURIComponent(name)}${op ? `/${op}` : ''}`;
}
export function jobUrl(id, op) {
  return `/v1/jobs/${encodeURIComponent(id)}${op ? `/${op}` : ''}`;
}

// Listeners told about every 401/403, so the page can point at the tokens.
const authListeners = new Set();
export function onAuthError(fn) { authListeners.add(fn); }

function headers(need, json) {
  const h = {};
  const t = tokenFor(need);
  if (t) h.Authorization = `Bearer ${t}`;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function fail(r, need) {
  let code = 'error';
  let message = r.statusText || `HTTP ${r.status}`;
  try {
    const j = await r.json();
    if (j && j.error) ({ code, message } = j.error);
  } catch (e) { /* not a JSON error body: keep the status text */ }
  const err = new ApiError(r.status, code, message, need);
  if (r.status === 401 || r.status === 403) authListeners.forEach((fn) => fn(err));
  return err;
}

// One call.  opts: method, body (an object, sent as JSON), need ('inference'
// by default, or 'admin'), as ('json' | 'blob' | 'arrayBuffer' | 'response'),
// signal (an AbortSignal).  Throws ApiError (status 0: no answer).
export async function call(path, opts = {}) {
  const need = opts.need || 'inference';
  const init = {
    method: opts.method || (opts.body !== undefined ? 'POST' : 'GET'),
    headers: headers(need, opts.body !== undefined),
    signal: opts.signal,
    cache: 'no-store',
  };
  if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `the daemon did not answer (${e.message})`, need);
  }
  if (!r.ok) throw await fail(r, need);
  const as = opts.as || 'json';
  return as === 'response' ? r : r[as]();
}

// Follow a job's events: onEvent(type, record) for each "progress" and the
// final "end".  Resolves when the stream ends; rejects with ApiError (or
// AbortError when signal fires).
export async function followJob(id, onEvent, signal) {
  const r = await call(jobUrl(id, 'events'),
                       { need: 'admin', as: 'response', signal });
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let type = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') { // an event ends at a blank line
        if (data.length) onEvent(type, JSON.parse(data.join('\n')));
        type = 'message';
        data = [];
      } else if (line.startsWith('event:')) {
        type = line.slice(6).trim();
      } else if (line.startsWith('data:')) {
        data.push(line.slice(5).replace(/^ /, ''));
      }
    }
  }
}
