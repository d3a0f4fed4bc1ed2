#!/usr/bin/env bash
# init-secrets.sh writes deploy/compose/.env (mode 0600) with random
# secrets for the compose deployment, once; docker compose reads it.
set -euo pipefail
cd "$(dirname "$0")"
[ -f .env ] && { echo ".env exists: keeping it"; exit 0; }
rnd() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077
{
  echo "LIVEFUSE_API_TOKEN=$(rnd 18)"
  echo "LIVEFUSE_RELAY_SECRET=$(rnd 18)"
  echo "LIVEFUSE_PUBLISH_TOKEN=$(rnd 12)"
  echo "LIVEFUSE_MASTER_KEY=$(rnd 32)"
  echo "LIVEFUSE_URL_SECRET=$(rnd 18)"
  echo "LIVEFUSE_S3_ACCESS_KEY=livefuse$(rnd 4)"
  echo "LIVEFUSE_S3_SECRET_KEY=$(rnd 18)"
} > .env
echo "wrote $(pwd)/.env"
