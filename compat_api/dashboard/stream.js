// The run's WebSocket stream (SPEC §7): subscribe with the cursor of the state we loaded, apply seq'd
// events once (a replay that overlaps what we hold is harmless: values are set, not appended), notice
// gaps (a missing seq not listed in a later `skipped` within GAP_GRACE_MS) and replay from before
// them, reconnect with the cursor after a drop (backoff), stop on 1000 (completed), 4404 and auth.

const GAP_GRACE_MS = 3000;
const AUTH_CLOSE = new Set([4401, 4403, 4408]);
const CONSUMES_SEQ = new Set(["run_update", "warning_update", "status"]);

export class Stream {
  /** `run` holds {id, epoch, seq}; `on` the handlers: token, snapshot, runUpdate, warning, status,
   *  progress, subscribed, conn(state, detail), auth. */
  constructor(run, on) {
    this.run = run;
    this.on = on;
    this.ws = null;
    this.connected = false;
    this.state = "offline";
    this.reconnects = 0;
    this.attempt = 0;
    this.timer = null;
    this.missing = new Set();
    this.missingSince = 0;
    this.gaps = 0;
    this.messageMs = 0; // time spent parsing and applying messages
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/v1/runs/${encodeURIComponent(this.run.id)}/stream`;
  }

  connect(since = this.run.epoch ? { epoch: this.run.epoch, seq: this.run.seq } : null) {
    clearTimeout(this.timer);
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      const token = this.on.token();
      if (token) ws.send(JSON.stringify({ type: "auth", token }));
      ws.send(JSON.stringify({ type: "subscribe", since, nodes: null }));
      this.setConn("connecting");
    };
    ws.onmessage = (e) => {
      const t0 = performance.now();
      try { this.handle(JSON.parse(e.data)); } catch (err) { console.error("bad message", err); }
      this.messageMs += performance.now() - t0;
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return; // replaced on purpose
      this.connected = false;
      this.ws = null;
      if (AUTH_CLOSE.has(e.code)) { this.setConn("auth", "token needed"); this.on.auth(); return; }
      if (e.code === 4404) { this.setConn("closed", "unknown run"); return; }
      if (e.code === 1000) { this.setConn("ended", this.run.status ?? "closed"); return; } // completed or deleted
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    const delay = Math.min(30000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.setConn("reconnecting");
    this.timer = setTimeout(() => { this.reconnects += 1; this.connect(); }, delay);
  }

  /** Reconnect at once from `since` (null: from seq 1 of the current epoch); events after it re-apply. */
  reconnectNow(since) {
    this.disconnect();
    this.reconnects += 1;
    if (since === null) this.run.epoch = null;
    this.run.seq = since?.seq ?? 0;
    this.connect(since);
  }

  disconnect() {
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    this.connected = false;
    if (ws) ws.close(1000);
  }

  setConn(state, detail = "") {
    this.state = state;
    this.on.conn(state, detail);
  }

  /** True when the event is new (to apply); false for a duplicate from an overlapping replay. */
  advance(ev) {
    const run = this.run;
    if (run.epoch != null && ev.epoch != null && ev.epoch !== run.epoch) {
      this.reconnectNow(null); // a new epoch without a snapshot: our numbering is meaningless
      return false;
    }
    for (const s of ev.skipped ?? []) this.missing.delete(s);
    const seq = ev.seq;
    if (!Number.isInteger(seq)) return !CONSUMES_SEQ.has(ev.type);
    if (seq < run.seq) return false;
    if (seq === run.seq) return !CONSUMES_SEQ.has(ev.type) || ev.type === "status";
    const consumes = CONSUMES_SEQ.has(ev.type);
    const skipped = new Set(ev.skipped ?? []);
    for (let s = run.seq + 1; s < (consumes ? seq : seq + 1); s++) if (!skipped.has(s)) this.missing.add(s);
    if (this.missing.size && !this.missingSince) this.missingSince = Date.now();
    run.seq = seq;
    return true;
  }

  checkGaps() {
    if (!this.missing.size) { this.missingSince = 0; return; }
    if (Date.now() - this.missingSince < GAP_GRACE_MS) return;
    this.gaps += 1; // a real gap: replay from just before it
    const from = Math.min(...this.missing) - 1;
    this.missing.clear();
    this.missingSince = 0;
    this.reconnectNow({ epoch: this.run.epoch, seq: Math.max(0, from) });
  }

  handle(msg) {
    switch (msg.type) {
      case "subscribed": // a replay (recovered) or a snapshot follows
        this.attempt = 0;
        this.connected = true;
        if (msg.epoch !== this.run.epoch) { this.missing.clear(); this.run.epoch = msg.epoch; }
        this.setConn("live");
        this.on.subscribed(msg);
        return;
      case "snapshot":
        this.run.epoch = msg.epoch ?? this.run.epoch;
        this.run.seq = msg.seq ?? this.run.seq;
        this.missing.clear();
        this.on.snapshot(msg);
        return;
      case "resync":
        this.missing.clear(); // a snapshot follows
        return;
      case "run_update":
        if (this.advance(msg)) this.on.runUpdate(msg);
        return;
      case "warning_update":
        if (this.advance(msg)) this.on.warning(msg);
        return;
      case "status":
        if (this.advance(msg)) this.on.status(msg);
        return;
      case "progress":
        this.advance(msg);
        this.on.progress(msg);
        return;
      case "snapshot_written":
        this.advance(msg);
        return;
      default:
        return; // pong and future types
    }
  }
}
