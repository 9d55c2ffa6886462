-- soak.lua — the wrk script of scripts/soak.sh (`make soak`).
--
-- Each wrk thread holds ONE connection (soak.sh runs wrk with -c equal to
-- -t), so a thread has at most one request in flight, and every response
-- answers the thread's last request: that is how it is tallied by kind.  A
-- request() while the last request is still unanswered means wrk lost it
-- (the socket failed and wrk reconnected): it is counted as status "lost".
--
-- Every thread walks the same list of requests round-robin, each from its
-- own offset: every route with its formats, and deliberate bad requests with
-- the one 4xx each must get.  Besides, thread 1 submits a small training job
-- every SOAK_JOB_EVERY seconds, reads it, and cancels it SOAK_JOB_CANCEL
-- seconds later; thread 2 reloads a model (PUT, the same file) every
-- SOAK_RELOAD_EVERY seconds.
--
-- At the end done() prints one line per (kind, status) for soak.sh:
--   TALLY <kind> <status> <count> <ok|BAD>
-- status is the HTTP status, "lost", or "ctype" (the status was right but
-- the Content-Type was not the one the route promises).
--
-- Environment (set by soak.sh): SOAK_ADMIN_TOKEN, SOAK_VAE, SOAK_GAN (model
-- names), SOAK_VAE_Z, SOAK_GAN_Z (their latent sizes), SOAK_PNG (a 28x28
-- Fashion-MNIST test image, base64 PNG), SOAK_IMAGE (the same image as a JSON
-- array of 784 values), SOAK_JOB_EVERY, SOAK_JOB_CANCEL, SOAK_RELOAD_EVERY.

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then
        if default == nil then error("soak.lua: " .. name .. " is not set") end
        return default
    end
    return v
end

local admin = env("SOAK_ADMIN_TOKEN")
local vae, gan = env("SOAK_VAE"), env("SOAK_GAN")
local vae_z, gan_z = tonumber(env("SOAK_VAE_Z")), tonumber(env("SOAK_GAN_Z"))
local png, image = env("SOAK_PNG"), env("SOAK_IMAGE")
local job_every = tonumber(env("SOAK_JOB_EVERY", "20"))
local job_cancel = tonumber(env("SOAK_JOB_CANCEL", "2"))
local reload_every = tonumber(env("SOAK_RELOAD_EVERY", "30"))

local JSON = "application/json"
local auth = "Bearer " .. admin

local function zrow(n, seed)
    local t = {}
    for i = 1, n do t[i] = string.format("%.3f", ((i * 37 + seed) % 17) / 8.0 - 1.0) end
    return "[" .. table.concat(t, ",") .. "]"
end

-- kind -> {status -> true}, and kind -> the Content-Type of its 2xx
expect, ctype = {}, {}
local list = {}

-- add(kind, method, path, body, statuses, content type of the 2xx or nil, headers)
-- A body is sent as application/json unless headers say otherwise.
local function add(kind, method, path, body, statuses, ct, headers)
    local h = headers or {}
    if body and h["Content-Type"] == nil then h["Content-Type"] = JSON end
    if h["Content-Type"] == false then h["Content-Type"] = nil end
    list[#list + 1] = {kind = kind, method = method, path = path, body = body, headers = h}
    declare(kind, statuses, ct)
end

function declare(kind, statuses, ct)
    expect[kind] = expect[kind] or {}
    for _, s in ipairs(statuses) do expect[kind][s] = true end
    ctype[kind] = ct
end

local admin_h = function() return {Authorization = auth} end

-- health, metrics, model listing
add("healthz", "GET", "/healthz", nil, {200}, JSON)
add("readyz", "GET", "/readyz", nil, {200}, JSON)
add("metrics", "GET", "/metrics", nil, {200}, "text/plain")
add("models", "GET", "/v1/models", nil, {200}, JSON)

for _, m in ipairs({{vae, vae_z, "vae"}, {gan, gan_z, "gan"}}) do
    local name, z, k = m[1], m[2], m[3]
    local base = "/v1/models/" .. name
    add("model-" .. k, "GET", base, nil, {200}, JSON)
    add("sample-json-" .. k, "POST", base .. "/sample", '{"n":4,"seed":7,"temperature":0.9}', {200}, JSON)
    add("sample-png-" .. k, "POST", base .. "/sample", '{"n":16,"seed":8,"format":"png","cols":4}', {200}, "image/png")
    add("sample-npy-" .. k, "POST", base .. "/sample", '{"n":4,"seed":9,"format":"npy"}', {200}, "application/octet-stream")
    add("sample.png-" .. k, "GET", base .. "/sample.png?n=16&seed=10&cols=4&temperature=1", nil, {200}, "image/png")
    add("decode-json-" .. k, "POST", base .. "/decode", '{"z":[' .. zrow(z, 1) .. ',' .. zrow(z, 2) .. ']}', {200}, JSON)
    add("decode-png-" .. k, "POST", base .. "/decode", '{"z":' .. zrow(z, 3) .. ',"format":"png"}', {200}, "image/png")
    add("decode-npy-" .. k, "POST", base .. "/decode", '{"z":[' .. zrow(z, 4) .. '],"format":"npy"}', {200}, "application/octet-stream")
    add("interpolate-seed-" .. k, "POST", base .. "/interpolate",
        '{"from":{"seed":1},"to":{"seed":2,"temperature":0.8},"steps":8,"method":"slerp","format":"png"}', {200}, "image/png")
    add("interpolate-z-" .. k, "POST", base .. "/interpolate",
        '{"from":{"z":' .. zrow(z, 5) .. '},"to":{"z":' .. zrow(z, 6) .. '},"steps":4,"method":"lerp"}', {200}, JSON)
end
local vbase = "/v1/models/" .. vae
add("encode-png", "POST", vbase .. "/encode", '{"png":"' .. png .. '"}', {200}, JSON)
add("encode-image", "POST", vbase .. "/encode", '{"images":[' .. image .. ']}', {200}, JSON)
add("reconstruct-png", "POST", vbase .. "/reconstruct", '{"png":["' .. png .. '"],"format":"png"}', {200}, "image/png")
add("reconstruct-json", "POST", vbase .. "/reconstruct", '{"images":[' .. image .. ']}', {200}, JSON)
add("interpolate-image", "POST", vbase .. "/interpolate",
    '{"from":{"png":"' .. png .. '"},"to":{"image":' .. image .. '},"steps":5,"format":"npy"}', {200}, "application/octet-stream")
add("jobs-list", "GET", "/v1/jobs", nil, {200}, JSON, admin_h())

-- deliberate bad requests, each with the one status it must get
local gbase = "/v1/models/" .. gan
add("bad-json-400", "POST", gbase .. "/sample", '{"n":', {400})
add("bad-field-400", "POST", gbase .. "/sample", '{"n":2,"bogus":1}', {400})
add("bad-query-400", "GET", gbase .. "/sample.png?n=abc", nil, {400})
add("no-token-401", "GET", "/v1/jobs", nil, {401})
add("bad-token-401", "GET", "/v1/jobs", nil, {401}, nil, {Authorization = "Bearer not-the-admin-token-0000"})
add("no-model-404", "POST", "/v1/models/no-such-model/sample", '{"n":1}', {404})
add("no-route-404", "GET", "/v1/nothing-here", nil, {404})
add("no-job-404", "GET", "/v1/jobs/j-999999", nil, {404}, nil, admin_h())
add("method-405", "DELETE", "/healthz", nil, {405})
-- a head that announces 100 MiB and sends none of it (wrk.format() would
-- replace the Content-Length, so this one is written out whole)
add("too-large-413", "POST", gbase .. "/sample", nil, {413})
list[#list].raw = "POST " .. gbase .. "/sample HTTP/1.1\r\nHost: %s\r\n" ..
    "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
add("ctype-415", "POST", gbase .. "/sample", '{"n":1}', {415}, nil, {["Content-Type"] = "text/plain"})
add("range-422", "POST", gbase .. "/sample", '{"n":100000}', {422})
add("encode-gan-422", "POST", gbase .. "/encode", '{"images":[' .. image .. ']}', {422})
add("bad-spec-422", "POST", "/v1/jobs", '{"kind":"vae","model":"soak-bad","train":{"epochs":0}}', {422}, nil, admin_h())

-- the requests that are not in the list
declare("job-submit", {202}, JSON)
declare("job-get", {200}, JSON)
declare("job-cancel", {200, 202}, JSON)
declare("reload", {200}, JSON)

local job_spec = '{"kind":"vae","model":"soak-job","limit":512,"arch":{"hidden":[16],"z":4},' ..
    '"train":{"epochs":1000,"batch":32},"checkpoint_every":100000}'

-- ---- per thread --------------------------------------------------------
local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
    threads[#threads + 1] = thread
end

tally = {}
local pos, pending, verifying = 0, nil, false
local now = os.time
local next_job, job_id, cancel_at, job_seen = nil, nil, nil, nil
local next_reload = nil

local function count(kind, status)
    local key = kind .. " " .. status
    tally[key] = (tally[key] or 0) + 1
end

function init(args)
    pos = ((id or 1) - 1) * 7 % #list
    -- wrk calls the first thread's request() once before it starts, to
    -- check what it returns; that request is never sent
    verifying = id == 1
    next_job = now() + 5
    next_reload = now() + 10
end

local function send(r)
    if verifying then
        verifying = false -- wrk's check: this one is never sent
    else
        if pending then count(pending.kind, "lost") end
        pending = r
    end
    if r.raw then return string.format(r.raw, wrk.headers["Host"]) end
    return wrk.format(r.method, r.path, r.headers, r.body)
end

function request()
    local t = now()
    if id == 1 then
        if job_id and job_seen and t >= cancel_at then
            return send({kind = "job-cancel", method = "DELETE", path = "/v1/jobs/" .. job_id, headers = admin_h()})
        elseif job_id and not job_seen and t >= cancel_at - job_cancel / 2 then
            return send({kind = "job-get", method = "GET", path = "/v1/jobs/" .. job_id, headers = admin_h()})
        elseif not job_id and t >= next_job then
            next_job = t + job_every
            return send({kind = "job-submit", method = "POST", path = "/v1/jobs", body = job_spec,
                         headers = {Authorization = auth, ["Content-Type"] = JSON}})
        end
    elseif id == 2 and t >= next_reload then
        next_reload = t + reload_every
        return send({kind = "reload", method = "PUT", path = "/v1/models/" .. vae, headers = admin_h()})
    end
    pos = pos % #list + 1
    return send(list[pos])
end

local function header(headers, name)
    return headers[name] or headers[string.lower(name)]
end

function response(status, headers, body)
    local r = pending
    pending = nil
    if r == nil then return end
    local ct = header(headers, "Content-Type") or ""
    if expect[r.kind][status] and status < 300 and ctype[r.kind] and
        string.sub(ct, 1, #ctype[r.kind]) ~= ctype[r.kind] then
        count(r.kind, "ctype")
    else
        count(r.kind, status)
    end
    if r.kind == "job-submit" and status == 202 then
        job_id = string.match(body, '"id":"(j%-[0-9]+)"')
        cancel_at = now() + job_cancel
        job_seen = false
    elseif r.kind == "job-get" then
        job_seen = true
    elseif r.kind == "job-cancel" then
        job_id = nil
    end
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        local tl = t:get("tally")
        for key, n in pairs(tl) do total[key] = (total[key] or 0) + n end
    end
    local keys = {}
    for key in pairs(total) do keys[#keys + 1] = key end
    table.sort(keys)
    for _, key in ipairs(keys) do
        local kind, status = string.match(key, "^(%S+) (%S+)$")
        local ok = expect[kind] and expect[kind][tonumber(status)] and "ok" or "BAD"
        io.write(string.format("TALLY %s %s %d %s\n", kind, status, total[key], ok))
    end
    -- the routes that got no request at all (the table shows them as missing)
    for kind in pairs(expect) do
        local seen = false
        for key in pairs(total) do
            if string.sub(key, 1, #kind + 1) == kind .. " " then seen = true end
        end
        if not seen then io.write(string.format("TALLY %s none 0 BAD\n", kind)) end
    end
    local e = summary.errors
    io.write(string.format("WRK %d %d %d %d %d %d\n", summary.requests, summary.duration,
        e.connect, e.read, e.write, e.timeout))
end
