"""Writes the gateway's JSON config from the environment scripts/serve prepared."""
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from s3_buckets import gateway_rules  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
fn_root = root / "supabase" / "functions"
functions = sorted(
    d.name for d in fn_root.iterdir()
    if d.is_dir() and not d.name.startswith("_") and (d / "index.ts").exists()
)

api = os.environ["EW_API_URL"]
env = {
    "SUPABASE_URL": api,
    "SUPABASE_ANON_KEY": os.environ["EW_ANON_KEY"],
    "SUPABASE_SERVICE_ROLE_KEY": os.environ["EW_SERVICE_KEY"],
    "SUPABASE_JWT_SECRET": os.environ["EW_SECRET"],
    "SUPABASE_DB_URL": os.environ["EW_FUNCTIONS_DB_URL"],
    # The hosted runtime's key maps, {"default": key}. The local gateway knows
    # no opaque sb_publishable_/sb_secret_ keys, so the JWT keys stand in.
    "SUPABASE_PUBLISHABLE_KEYS": json.dumps({"default": os.environ["EW_ANON_KEY"]}),
    "SUPABASE_SECRET_KEYS": json.dumps({"default": os.environ["EW_SERVICE_KEY"]}),
    "ENVIRONMENT": "development",
}
s3_env = dict(line.split("=", 1) for line in os.environ.get("EW_S3_ENV", "").splitlines() if "=" in line)
# Functions reach storage through the gateway's /storage/v1/s3, as on Supabase;
# only the gateway talks to the S3 server directly.
env.update({k: v for k, v in s3_env.items() if k != "S3_DIRECT_ENDPOINT"})
# Like `supabase functions serve --env-file supabase/functions/.env`.
dotenv = pathlib.Path(os.environ.get("EW_FUNCTIONS_DOTENV") or fn_root / ".env")
if dotenv.exists():
    for line in dotenv.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            k = k.strip()
            # Supabase reserves the prefix: `supabase secrets set` refuses such a
            # name, so a secret that works here could never be deployed.
            if k.startswith("SUPABASE_"):
                sys.exit(f"{dotenv}: {k}: secret names must not start with SUPABASE_ "
                         "(the prefix is reserved for what the platform sets); rename it")
            env[k] = v.strip().strip('"')
PASS = ("GEMINI_", "OPENAI_", "ANTHROPIC_", "MISTRAL_", "AI_", "RATE_LIMIT_", "CORS_", "MAX_BODY", "LOG_LEVEL", "EDGEWORKS_FN_", "QUEUE_", "CHAT_", "UPLOAD_", "MEDIA_")
for k, v in os.environ.items():
    if k.startswith(PASS):
        env[k] = v

schedule_file = root / "supabase" / "schedule.json"
cron = json.loads(schedule_file.read_text()) if schedule_file.exists() else []
if os.environ.get("EDGEWORKS_NO_CRON") == "1":
    cron = []

print(json.dumps({
    "port": int(api.rsplit(":", 1)[1]),
    "rest_url": "http://127.0.0.1:" + os.environ.get("EDGEWORKS_REST_PORT", "54330"),
    # The gateway verifies S3 signatures with these keys and re-signs for the upstream.
    "s3": {
        "upstream": s3_env["S3_DIRECT_ENDPOINT"],
        "region": s3_env["S3_REGION"],
        "access_key_id": s3_env["S3_ACCESS_KEY_ID"],
        "secret_access_key": s3_env["S3_SECRET_ACCESS_KEY"],
        # The buckets' size and type rules, enforced on uploads as Supabase Storage does.
        **gateway_rules(root / "supabase" / "config.toml"),
    } if s3_env.get("S3_DIRECT_ENDPOINT") else None,
    "deno": os.environ["EW_DENO"],
    "functions_root": str(fn_root),
    "config_toml": str(root / "supabase" / "config.toml"),
    "functions": [{"name": n, "entry": str(fn_root / n / "index.ts")} for n in functions],
    "function_env": env,
    "service_role_key": os.environ["EW_SERVICE_KEY"],
    "cron": cron,
}))
