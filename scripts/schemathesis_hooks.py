"""Hooks for the API fuzz test (crates/banger-cli/tests/api_fuzz.rs).

Before every request the daemon's state is read (the VM, image and kernel
listings and the files of the data directory); after a request the daemon
rejected (4xx/5xx), it is read again and must not have changed: a refused
request changes nothing. Every request and every violation is appended to
files the test reads.
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["BANGER_FUZZ_BASE"]
DATA_DIR = os.environ["BANGER_FUZZ_DATA_DIR"]
LOG = os.environ["BANGER_FUZZ_LOG"]

_before = {}

# `PUT /v1/vms/{reference}/files` takes a tar body: send the generated
# bytes as they are, as for application/octet-stream.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


def _state():
    out = {}
    for path in ("/v1/vms", "/v1/images", "/v1/kernels"):
        with urllib.request.urlopen(BASE + path, timeout=60) as r:
            out[path] = json.load(r)
    files = []
    for root, _dirs, names in os.walk(DATA_DIR):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), DATA_DIR)
            if rel.startswith(("state.db", "run/")) or rel == "bangerd.log":
                continue
            files.append(rel)
    out["files"] = sorted(files)
    return out


def _log(record):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


@schemathesis.hook
def before_call(context, case, kwargs):
    _before["state"] = _state()


@schemathesis.hook
def after_call(context, case, response):
    record = {
        "method": case.operation.method.upper(),
        "path": case.operation.path,
        "status": response.status_code,
    }
    if response.status_code >= 400:
        after = _state()
        if after != _before.get("state"):
            record["violation"] = "state changed by a rejected request"
            record["request"] = {
                "path_parameters": case.path_parameters,
                "query": case.query,
                "body": case.body if isinstance(case.body, (dict, list, str, int, float, bool, type(None))) else repr(case.body),
            }
    _log(record)
