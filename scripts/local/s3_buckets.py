#!/usr/bin/env python3
"""Storage buckets from supabase/config.toml, for the local stack.

  s3_buckets.py create <config.toml>       create every [storage.buckets.<name>]
                                           on the S3 endpoint (idempotent)
  s3_buckets.py policy-json <config.toml>  print the STORAGE_BUCKETS JSON the
                                           functions read (crates/core storage_policy)
  s3_buckets.py names <config.toml>        print the bucket names, one a line
  s3_buckets.py gateway-rules <config.toml>
                                           print the rules the gateway's S3
                                           endpoint enforces (sizes in bytes)
  s3_buckets.py record-sql <config.toml>   print SQL that records every bucket in
                                           storage.buckets (the Storage API's view)

`create` reads S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY
from the environment (never from argv, where `ps` would show the secret) and
signs CreateBucket with SigV4. Standard library only (Python 3.11+ for tomllib).
"""

import datetime
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("s3_buckets.py needs Python 3.11 or newer (tomllib)")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def load_storage(path):
    with open(path, "rb") as f:
        config = tomllib.load(f)
    storage = config.get("storage", {})
    buckets = storage.get("buckets", {})
    if not isinstance(buckets, dict):
        sys.exit(f"{path}: [storage.buckets] must be a table of tables")
    return storage, buckets


def policy_json(path):
    """The subset the functions enforce; sizes pass through as written so
    there is one size parser (Rust's)."""
    storage, buckets = load_storage(path)
    out = {"buckets": {}}
    if storage.get("file_size_limit") is not None:
        out["file_size_limit"] = storage["file_size_limit"]
    for name, spec in buckets.items():
        b = {"public": bool(spec.get("public", False))}
        if spec.get("file_size_limit") is not None:
            b["file_size_limit"] = spec["file_size_limit"]
        if spec.get("allowed_mime_types"):
            b["allowed_mime_types"] = list(spec["allowed_mime_types"])
        out["buckets"][name] = b
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


_UNIT_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text):
    """Bytes in "50MiB", "1.5 GB", "512k", "1024" or an integer: binary
    multiples, as the Supabase CLI reads config.toml (and as
    crates/core storage_policy::parse_size does for the functions)."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        return text
    s = text.strip()
    i = 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    num, unit = s[:i], s[i:]
    if not num or num.startswith(".") or num.endswith(".") or num.count(".") > 1:
        raise ValueError(f"{text!r} is not a size like \"50MiB\"")
    unit = unit[1:] if unit.startswith(" ") else unit
    unit = unit.lower()
    shift = _UNIT_SHIFT.get(unit[:1], 0)
    rest = unit[1:] if shift else unit
    if rest not in ("", "i", "b", "ib"):
        raise ValueError(f"{text!r} is not a size like \"50MiB\"")
    whole, _, frac = num.partition(".")
    multiplier = 1 << shift
    frac = frac[:18]
    frac_bytes = int(frac) * multiplier // (10 ** len(frac)) if frac else 0
    return int(whole) * multiplier + frac_bytes


def gateway_rules(path):
    """What the gateway's /storage/v1/s3 enforces: per bucket the effective
    size limit (the smaller of the bucket's and [storage]'s) and the allowed
    types; buckets config.toml does not list get [storage]'s limit only."""
    storage, buckets = load_storage(path)
    default = storage.get("file_size_limit")
    default = parse_size(default) if default is not None else None
    out = {"buckets": {}, "default_file_size_limit": default}
    for name, spec in buckets.items():
        own = spec.get("file_size_limit")
        own = parse_size(own) if own is not None else None
        limits = [x for x in (own, default) if x is not None]
        out["buckets"][name] = {
            "file_size_limit": min(limits) if limits else None,
            "allowed_mime_types": [t.strip().lower() for t in spec.get("allowed_mime_types") or []],
        }
    return out


def _sql_text(value):
    return "'" + str(value).replace("'", "''") + "'"


def record_sql(path):
    """Upserts into storage.buckets: config.toml stays the truth for the
    buckets it declares (public, own size limit in bytes, allowed types),
    as `supabase seed buckets` makes it on a hosted project."""
    _, buckets = load_storage(path)
    lines = []
    for name, spec in buckets.items():
        own = spec.get("file_size_limit")
        limit = str(parse_size(own)) if own is not None else "null"
        types = [t.strip().lower() for t in spec.get("allowed_mime_types") or []]
        mimes = "array[" + ", ".join(_sql_text(t) for t in types) + "]::text[]" if types else "null"
        public = "true" if spec.get("public", False) else "false"
        lines.append(
            "insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types) "
            f"values ({_sql_text(name)}, {_sql_text(name)}, {public}, {limit}, {mimes}) "
            "on conflict (id) do update set public = excluded.public, file_size_limit = excluded.file_size_limit, "
            "allowed_mime_types = excluded.allowed_mime_types, updated_at = now();"
        )
    return "\n".join(lines)


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_put_bucket(endpoint, region, access_key, secret_key, bucket):
    u = urllib.parse.urlsplit(endpoint.rstrip("/"))
    if u.scheme not in ("http", "https") or not u.netloc:
        sys.exit("S3_ENDPOINT must be an http(s) URL")
    host = u.netloc
    path = f"{u.path}/{bucket}"
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{region}/s3/aws4_request"
    canonical_path = urllib.parse.quote(path, safe="/-_.~")
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", canonical_path, ""]
        + [f"{k}:{headers[k]}" for k in sorted(headers)]
        + ["", signed, EMPTY_SHA256]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), date), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"{u.scheme}://{host}{canonical_path}", method="PUT", data=b"")
    req.add_header("x-amz-content-sha256", EMPTY_SHA256)
    req.add_header("x-amz-date", amz_date)
    req.add_header(
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    )
    return req


def create(path):
    _, buckets = load_storage(path)
    env = {}
    for name in ("S3_ENDPOINT", "S3_REGION", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        env[name] = os.environ.get(name, "")
        if not env[name]:
            sys.exit(f"{name} is not set")
    for bucket in buckets:
        req = signed_put_bucket(
            env["S3_ENDPOINT"], env["S3_REGION"], env["S3_ACCESS_KEY_ID"], env["S3_SECRET_ACCESS_KEY"], bucket
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                print(f"bucket {bucket}: created ({resp.status})", file=sys.stderr)
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            if e.code == 409 and ("BucketAlreadyOwnedByYou" in body or "BucketAlreadyExists" in body):
                print(f"bucket {bucket}: exists", file=sys.stderr)
                continue
            code = body.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body else ""
            sys.exit(f"bucket {bucket}: CreateBucket failed with HTTP {e.code} {code}")
        except urllib.error.URLError as e:
            sys.exit(f"bucket {bucket}: S3 endpoint unreachable: {e.reason}")


def main(argv):
    if len(argv) != 3 or argv[1] not in ("create", "policy-json", "names", "gateway-rules", "record-sql"):
        sys.exit(__doc__)
    cmd, path = argv[1], argv[2]
    if cmd == "create":
        create(path)
    elif cmd == "policy-json":
        print(policy_json(path))
    elif cmd == "record-sql":
        print(record_sql(path))
    elif cmd == "gateway-rules":
        print(json.dumps(gateway_rules(path), sort_keys=True))
    else:
        for name in load_storage(path)[1]:
            print(name)


if __name__ == "__main__":
    main(sys.argv)
