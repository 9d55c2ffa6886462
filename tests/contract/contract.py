#!/usr/bin/python3
"""contract.py — the API contract test (make test-contract): docs/openapi.json
against the daemon.

  lint       `redocly lint` at the version tests/contract/package-lock.json
             pins (npm ci into --npm-dir), with tests/contract/redocly.yaml.
             SKIPPED (said so, never a silent pass) when npm or the registry
             is out of reach.
  routes     the router's table (`latentd routes`) and the document's
             operations are the same set of (method, path, auth).
  responses  every response the Check suites recorded (LD_CONTRACT_LOG, see
             tests/tu_daemon.c) has a documented status and content type,
             its JSON body validates against the schema (jsonschema, draft
             2020-12, as OpenAPI 3.1 uses), it carries the headers the
             document declares required (X-Request-Id on every response, the
             same id as request_id in an error body), and a Content-Encoding
             only where the document declares one.
  selftest   each check above catches a planted fault (a wrong schema, an
             undocumented status or path, a missing or extra route).

Exit status 0 when every check passed or was skipped; 1 otherwise.
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))

# Answers of the HTTP layer before any route is chosen (tests/tu_daemon.c
# records them too): the JSON error object, whatever the path.
LAYER_STATUSES = {400, 404, 405, 414, 431, 503}

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def op_auth(op):
    """none / inference / admin from an operation's security list."""
    names = {k for req in op.get("security", []) for k in req}
    if not names:
        return "none"
    return "inference" if "inferenceToken" in names else "admin"


def doc_routes(doc):
    return {(m.upper(), p): op_auth(op)
            for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS}


# ------------------------------------------------------------------ routes

def check_routes(doc, table):
    """Failures (strings) comparing the router's table (lines of `latentd
    routes`) with the document."""
    served = {}
    for line in table.splitlines():
        if line.strip():
            method, path, auth = line.split()
            served[(method, path)] = auth
    documented = doc_routes(doc)
    fails = []
    for key in sorted(served.keys() - documented.keys()):
        fails.append("served but not documented: %s %s" % key)
    for key in sorted(documented.keys() - served.keys()):
        fails.append("documented but not served: %s %s" % key)
    for key in sorted(served.keys() & documented.keys()):
        if served[key] != documented[key]:
            fails.append("%s %s: auth %s served, %s documented" % (key + (served[key], documented[key])))
    return fails


# --------------------------------------------------------------- responses

def template_regex(path):
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")


class Contract:
    def __init__(self, doc):
        self.doc = doc
        # the most literal template first: /v2/health/ready before /v2/models/{name}
        self.paths = sorted(((template_regex(p), p) for p in doc["paths"]),
                            key=lambda rp: (rp[1].count("{"), -len(rp[1])))
        self.validators = {}
        self.seen = set()

    def validator(self, pointer):
        """A draft 2020-12 validator for the schema at pointer in the document
        (its $refs resolve within the document)."""
        v = self.validators.get(pointer)
        if v is None:
            root = dict(self.doc)
            root["$ref"] = "#" + pointer
            v = self.validators[pointer] = jsonschema.Draft202012Validator(root)
        return v

    def match(self, path):
        path = path.split("?", 1)[0]
        for rx, template in self.paths:
            if rx.match(path):
                return template
        return None

    def resolve(self, obj, pointer):
        """obj, following a $ref; (object, its pointer)."""
        while "$ref" in obj:
            pointer = obj["$ref"][1:]
            obj = self.doc
            for part in pointer.strip("/").split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    def error_body(self, rec, what):
        body = rec.get("body")
        if rec.get("length", 0) == 0 or rec.get("method") == "HEAD":
            return []
        if body is None:
            return ["%s: a %s answer without a JSON error body (%s)" % (what, rec["status"], rec.get("ctype"))]
        errs = sorted(self.validator("/components/schemas/Error").iter_errors(body), key=str)
        return ["%s: %s" % (what, e.message) for e in errs[:3]]

    def request_id(self, rec, what):
        """Every recorded response (the recorder keeps headers) carries a
        valid X-Request-Id, and an error body's request_id is the same."""
        headers = rec.get("headers")
        if headers is None:
            return []
        rid = headers.get("x-request-id")
        if rid is None:
            return ["%s: no X-Request-Id header" % what]
        schema, _ = self.resolve(self.doc["components"]["headers"]["X-Request-Id"], "")
        errs = [e.message for e in jsonschema.Draft202012Validator(schema["schema"]).iter_errors(rid)]
        body = rec.get("body")
        if isinstance(body, dict) and "error" in body:
            err = body["error"]
            in_body = err.get("request_id") if isinstance(err, dict) else body.get("request_id")
            if in_body is not None and in_body != rid:
                errs.append("request_id %r in the body, X-Request-Id %r" % (in_body, rid))
        return ["%s: X-Request-Id: %s" % (what, e) for e in errs[:3]]

    def headers(self, rec, what, resp):
        """The documented response resp's required headers are there, and a
        Content-Encoding only where resp declares one."""
        got = rec.get("headers")
        if got is None:
            return []
        declared = {k.lower(): self.resolve(v, "")[0] for k, v in resp.get("headers", {}).items()}
        fails = ["%s: no %s header (required)" % (what, name)
                 for name, h in sorted(declared.items()) if h.get("required") and name not in got]
        if "content-encoding" in got and "content-encoding" not in declared:
            fails.append("%s: Content-Encoding %s is not documented" % (what, got["content-encoding"]))
        return fails

    def check(self, rec):
        """Failures (strings) for one recorded response."""
        method, status = rec["method"].upper(), int(rec["status"])
        what = "%s %s -> %d" % (method, rec["path"], status)
        return self.request_id(rec, what) + self.check_doc(rec, method, status, what)

    def check_doc(self, rec, method, status, what):
        """check's failures of the status, content type, headers and body."""
        template = self.match(rec["path"])
        if template is None:
            if status not in LAYER_STATUSES:
                return ["%s: no documented path matches" % what]
            return self.error_body(rec, what)
        item = self.doc["paths"][template]
        if method == "OPTIONS":
            return [] if status == 204 or status in LAYER_STATUSES else ["%s: a preflight answers 204" % what]
        op_method = "get" if method == "HEAD" else method.lower()
        if op_method not in item:
            if status not in LAYER_STATUSES:
                return ["%s: %s is not documented on %s" % (what, method, template)]
            return self.error_body(rec, what)
        self.seen.add((op_method.upper(), template, status))
        responses = item[op_method]["responses"]
        base = "/paths/%s/%s/responses" % (template.replace("~", "~0").replace("/", "~1"), op_method)
        if str(status) not in responses:
            return ["%s: status %d is not documented for %s %s" % (what, status, op_method.upper(), template)]
        resp, pointer = self.resolve(responses[str(status)], base + "/" + str(status))
        content = resp.get("content", {})
        fails = self.headers(rec, what, resp)
        if method == "HEAD" or rec.get("length", 0) == 0:
            return fails
        ctype = (rec.get("ctype") or "").split(";")[0].strip().lower()
        if ctype not in content:
            return fails + ["%s: content type %r is not documented (%s)" %
                            (what, ctype, ", ".join(content) or "no body")]
        if ctype != "application/json" or "content-encoding" in rec.get("headers", {}):
            return fails  # a gzipped body is not recorded (the recorder does not inflate)
        if rec.get("body") is None:
            return fails + ["%s: the application/json body does not parse" % what]
        media_ptr = pointer + "/content/" + ctype.replace("/", "~1") + "/schema"
        errs = sorted(self.validator(media_ptr).iter_errors(rec["body"]), key=lambda e: list(e.absolute_path))
        return fails + ["%s: at %s: %s" % (what, "/".join(map(str, e.absolute_path)) or "(top)", e.message[:300])
                        for e in errs[:3]]


def check_responses(doc, lines):
    c = Contract(doc)
    fails = []
    n = 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            fails.append("record %d: not JSON (%s)" % (i, e))
            continue
        n += 1
        fails.extend(c.check(rec))
    return n, fails, c.seen


# -------------------------------------------------------------------- lint

def lint(doc_path, npm_dir):
    """0 clean, 1 findings; SKIPPED (returns 0) when redocly cannot be installed."""
    npm = shutil.which("npm")
    if not npm:
        print("contract lint: SKIPPED (npm is not installed: make deps installs nodejs)")
        return 0
    os.makedirs(npm_dir, exist_ok=True)
    lock_src = os.path.join(HERE, "package-lock.json")
    lock_dst = os.path.join(npm_dir, "package-lock.json")
    redocly = os.path.join(npm_dir, "node_modules", ".bin", "redocly")
    installed = os.path.join(npm_dir, "node_modules", ".package-lock.json")
    fresh = (os.path.exists(redocly) and os.path.exists(lock_dst) and os.path.exists(installed) and
             open(lock_src, "rb").read() == open(lock_dst, "rb").read())
    if not fresh:
        for f in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(HERE, f), os.path.join(npm_dir, f))
        try:
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=npm_dir,
                               capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            print("contract lint: SKIPPED (npm ci took more than 300 s: is the registry reachable?)")
            return 0
        if r.returncode != 0 or not os.path.exists(redocly):
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            print("contract lint: SKIPPED (npm ci failed: %s)" % " | ".join(tail))
            return 0
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")
    r = subprocess.run([redocly, "lint", "--config", os.path.join(HERE, "redocly.yaml"), doc_path],
                       capture_output=True, text=True, env=env, timeout=300)
    out = "\n".join(l for l in (r.stdout + r.stderr).splitlines()
                    if l.strip() and not any(ch in l for ch in "║╔╚"))
    if r.returncode != 0:
        print(out)
        print("contract lint: FAILED")
        return 1
    version = subprocess.run([redocly, "--version"], capture_output=True, text=True).stdout.split()
    print("contract lint: ok (@redocly/cli %s, recommended-strict)" % (version[0] if version else "?"))
    return 0


# ---------------------------------------------------------------- selftest

def selftest(doc):
    """Each check must catch a planted fault: (problems as strings, the
    number of faults planted)."""
    problems = []
    rid = {"x-request-id": "595b71c3568b737f"}
    good = {"method": "GET", "path": "/healthz", "status": 200, "ctype": "application/json",
            "length": 16, "headers": rid, "body": {"status": "ok"}}
    error = {"method": "GET", "path": "/nowhere", "status": 404, "ctype": "application/json", "length": 9,
             "headers": rid, "body": {"error": {"code": "not_found", "message": "m", "request_id": rid["x-request-id"]}}}
    png = dict(good, path="/v1/models/m/sample.png", ctype="image/png", length=100, body=None)
    cases = [
        ("a valid answer", doc, good, 0),
        ("a body the schema refuses", doc, dict(good, body={"status": "fine"}), 1),
        ("an undocumented status", doc, dict(good, status=418), 1),
        ("an undocumented content type", doc, dict(good, ctype="text/plain"), 1),
        ("an unknown path answering 200", doc, dict(good, path="/nowhere"), 1),
        ("a wrong error body", doc, dict(error, body={"err": 1}), 1),
        ("a valid error", doc, error, 0),
        ("an error without request_id", doc,
         dict(error, body={"error": {"code": "not_found", "message": "m"}}), 1),
        ("an error whose request_id is not the header's", doc,
         dict(error, headers={"x-request-id": "other"}), 1),
        ("an answer without X-Request-Id", doc, dict(good, headers={}), 1),
        ("a PNG", doc, png, 0),
        ("a gzipped PNG (undocumented Content-Encoding)", doc,
         dict(png, headers=dict(rid, **{"content-encoding": "gzip"})), 1),
    ]
    wrong = copy.deepcopy(doc)
    wrong["components"]["schemas"]["Model"]["required"].append("colour")
    model = {"method": "GET", "path": "/v1/models/m", "status": 200, "ctype": "application/json",
             "length": 10, "headers": rid, "body": None}
    # a real answer's shape, minimal: every required field of Model
    model["body"] = {"name": "m", "kind": "vae", "architecture": {"image": [28, 28], "activation": "relu",
                     "slope": 0, "dropout": 0}, "description": "d", "latent_size": 2,
                     "image_shape": [28, 28], "parameters": 1, "file": "m.safetensors", "sha256": "0" * 64,
                     "version": 1, "loaded_at": "2026-01-01T00:00:00Z", "record": {}}
    cases.append(("a valid model", doc, model, 0))
    cases.append(("a deliberately wrong schema", wrong, model, 1))
    for name, d, rec, want in cases:
        _, fails, _ = check_responses(d, [json.dumps(rec)])
        if bool(fails) != bool(want):
            problems.append("responses check on %s: %s" % (name, fails or "no failure reported"))
    table = "\n".join("%s %s %s" % (m, p, a) for (m, p), a in doc_routes(doc).items())
    if check_routes(doc, table):
        problems.append("routes check on the document's own table: %s" % check_routes(doc, table))
    route_faults = [("an undocumented route", table + "\nGET /v1/secret admin"),
                    ("a missing route", "\n".join(table.splitlines()[1:])),
                    ("a different auth", table.replace("GET /healthz none", "GET /healthz admin"))]
    for name, t in route_faults:
        if not check_routes(doc, t):
            problems.append("routes check did not catch %s" % name)
    return problems, sum(1 for c in cases if c[3]) + len(route_faults)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--doc", default="docs/openapi.json")
    ap.add_argument("--bin", default="build/latentd")
    ap.add_argument("--responses", help="the LD_CONTRACT_LOG file of a suite run")
    ap.add_argument("--npm-dir", default="build/contract")
    ap.add_argument("checks", nargs="*", default=["selftest", "lint", "routes", "responses"])
    a = ap.parse_args()
    with open(a.doc) as f:
        doc = json.load(f)
    jsonschema.Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})
    failed = 0
    for check in a.checks:
        if check == "selftest":
            problems, planted = selftest(doc)
            for p in problems:
                print("  " + p)
            print("contract selftest: %s" % ("FAILED" if problems else
                                             "ok (%d planted faults caught)" % planted))
            failed |= bool(problems)
        elif check == "lint":
            failed |= lint(a.doc, a.npm_dir)
        elif check == "routes":
            r = subprocess.run([a.bin, "routes"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                print("contract routes: FAILED (%s routes: %s)" % (a.bin, r.stderr.strip()))
                failed = 1
                continue
            fails = check_routes(doc, r.stdout)
            for f in fails:
                print("  " + f)
            n = len(r.stdout.splitlines())
            print("contract routes: %s (%d served, %d documented)" %
                  ("FAILED" if fails else "ok", n, len(doc_routes(doc))))
            failed |= bool(fails)
        elif check == "responses":
            if not a.responses or not os.path.exists(a.responses):
                print("contract responses: FAILED (no recorded responses at %s: run make test-plain, "
                      "which records them)" % a.responses)
                failed = 1
                continue
            with open(a.responses) as f:
                n, fails, seen = check_responses(doc, f)
            for f in fails[:50]:
                print("  " + f)
            ops = {(m, p) for m, p, _ in seen}
            print("contract responses: %s (%d responses, %d of %d operations seen, %d failures)" %
                  ("FAILED" if fails or n == 0 else "ok", n, len(ops), len(doc_routes(doc)), len(fails)))
            failed |= bool(fails) or n == 0
        else:
            ap.error("unknown check %s" % check)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
