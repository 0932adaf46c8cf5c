#!/usr/bin/env bash
# Starts edgehook locally: real workerd, local D1 (migrated) and local Queues. No Cloudflare account.
#   npm run dev                 # gateway on http://127.0.0.1:8787
#   PORT=9000 npm run dev       # another port
# Anything after `--` goes to `wrangler dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[[ -f .dev.vars ]] || { cp .dev.vars.example .dev.vars; echo "created .dev.vars from .dev.vars.example"; }
npx wrangler d1 migrations apply DB --local
exec npx wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
