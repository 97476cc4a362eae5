#!/usr/bin/env bash
# Debian packages some tests use: Fashion-MNIST's IDX files and a headless Chromium for the report.
# Installed when missing and we may (root with apt-get); tests that need them skip with a reason otherwise.
set -u
want=()
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not installing ${want[*]} (needs root and apt-get); the tests that use them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } >/dev/null 2>&1 \
  || echo "system-deps: could not install ${want[*]}; the tests that use them will skip" >&2
exit 0
