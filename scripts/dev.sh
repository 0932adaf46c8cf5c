#!/usr/bin/env bash
# Starts edgehook locally: real workerd, local D1 (migrated), local Queues, and the sample
# downstream receiver (scripts/receiver.mjs) that the local DESTINATIONS forward to.
# No Cloudflare account is needed.
#   npm run dev                 # gateway on http://127.0.0.1:8787, receiver on :8788
#   PORT=9000 npm run dev       # another gateway port
# Anything after `--` goes to `wrangler dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[[ -f .dev.vars ]] || { cp scripts/local.dev.vars .dev.vars; echo "created .dev.vars from scripts/local.dev.vars"; }
# The gateway refuses an ADMIN_TOKEN under 32 characters (503 admin_token_too_short); say so before it starts.
token=$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars | tail -n 1)
if [[ -n "$token" && ${#token} -lt 32 ]]; then
  echo "warning: ADMIN_TOKEN in .dev.vars is ${#token} characters; /admin and /console need at least 32 (openssl rand -hex 32)" >&2
fi
npx wrangler d1 migrations apply DB --local
node scripts/receiver.mjs &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
npx wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
