"""The operator's dashboard: static assets (`index.html`, `app.js`, `style.css`) served at `/` and `/dashboard`."""

from pathlib import Path

ASSETS_DIR = Path(__file__).parent
INDEX_HTML = ASSETS_DIR / "index.html"
