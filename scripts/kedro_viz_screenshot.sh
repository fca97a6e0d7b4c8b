#!/usr/bin/env bash
# Regenerates docs/kedro_viz.png: builds kedro-viz's static site for the project's pipelines, serves it on
# localhost and photographs it with headless Chromium (apt install chromium), feature hints switched off.
# Usage: bash scripts/kedro_viz_screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(realpath -m "${1:-docs/kedro_viz.png}")"
SITE="$(mktemp -d)"
trap 'kill "${SERVER:-0}" 2>/dev/null || true; rm -rf "$SITE"' EXIT
KEDRO_DISABLE_TELEMETRY=true kedro viz build --include-hooks
mv build "$SITE/site"
sed -i 's#<head>#<head><script>localStorage.setItem("KedroViz", JSON.stringify({showFeatureHints: false}));</script>#' \
  "$SITE/site/index.html"
python -m http.server 8765 --directory "$SITE/site" > /dev/null 2>&1 &
SERVER=$!
sleep 1
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=2400,1100 \
  --virtual-time-budget=15000 --screenshot="$OUT" http://localhost:8765/
echo "kedro-viz screenshot written to $OUT"
