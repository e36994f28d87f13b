// The trace view of `spec-tracing report --html`: draws the payload html.py embeds (see its
// docstring for the format) and handles zoom, clicks, sorting and filtering. No dependencies, no
// network: the page must open offline from a file.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("spec-data").textContent);
  const LABEL_W = 170, RIGHT_W = 80, SIDE_W = 350;  // SIDE_W: the positions chart (330) + 20
  let PLOT_W = 1000, W = LABEL_W + PLOT_W + RIGHT_W;  // the plot follows the window (layout())
  const ROW_H = 6, LANE_H = 3 * ROW_H + 5, BUCKETS = 60, MIN_NS = 1000, MAX_POSITIONS = 32;
  const COLOURS = {spec_draft: "#4c78a8", spec_verify: "#2e8b57", spec_draft_extend: "#b07aa1",
                   prefill: "#e0a030", decode: "#8c8c8c"};
  const OTHER = "#9c9c9c", ZERO = "#d62728", WIDTH_C = "#7b4fa0", BATCH_C = "#555";
  const ROWS = {spec_draft: 0, spec_verify: 1, spec_draft_extend: 2};
  const FIELDS = D.bar_fields;  // a bar: name, start, duration, step, attrset, span id
  const $ = (id) => document.getElementById(id);

  const SETS = D.attrsets.map((set) => {
    const o = {};
    for (const [k, v] of set) o[D.keys[k]] = v;
    return o;
  });
  const A = D.attr, VERIFY = D.names.indexOf("spec_verify");

  // Per request: its end, where queue wait ends (the first stage's start) and its verify rounds.
  // Runs appended to one file are shown one at a time, each on its own axis.
  const RUNS = Array.from({length: Math.max(1, D.runs)}, () => ({start: Infinity, end: 1}));
  for (const r of D.requests) {
    r.end = r.start + r.dur;
    const run = RUNS[r.run];
    run.start = Math.min(run.start, r.start);
    run.end = Math.max(run.end, r.end);
    r.queueEnd = r.bars.length ? r.bars[1] : null;
    for (let k = 0; k < r.bars.length; k += FIELDS) r.queueEnd = Math.min(r.queueEnd, r.bars[k + 1]);
    // Cut short before it ever got a batch slot: its whole life was queue wait (unless its
    // steps were only left out of the file, which its root then says).
    if (!r.bars.length && r.span && !r.rounds && SETS[r.attrs][A.steps_kept] !== false) {
      r.queueEnd = r.end;
    }
    r.rounds = [];
    for (let k = 0; k < r.bars.length; k += FIELDS) {
      if (r.bars[k] !== VERIFY) continue;
      const a = SETS[r.bars[k + 4]];
      // [end, accepted, proposed, batch size, draft width: the controller's choice if recorded]
      r.rounds.push([r.bars[k + 1] + r.bars[k + 2], a[A.accepted], a[A.proposed], a[A.batch],
                     a[A.width] ?? a[A.proposed]]);
    }
  }

  // An adaptive controller's decisions (spec_adapt spans, one per request of the batch): time of
  // each change -> "old→new", marked on the width chart.
  const ADAPT = D.names.indexOf("spec_adapt"), changes = new Map();
  if (ADAPT >= 0) {
    for (const r of D.requests) {
      for (let k = 0; k < r.bars.length; k += FIELDS) {
        if (r.bars[k] !== ADAPT) continue;
        const a = SETS[r.bars[k + 4]];
        changes.set(r.bars[k + 1], a[A.old_width] + "→" + a[A.new_width]);
      }
    }
  }

  for (const r of RUNS) if (r.start === Infinity) r.start = 0;  // a file without requests
  let run = 0, base = RUNS[0].start, runEnd = RUNS[0].end;
  const view = {t0: base, t1: runEnd, f0: 0, f1: 1, mode: "shared"};
  let visible = D.requests.slice();
  let selected = null;  // [request, bar index or -1 for the request], shown in Details
  const stats = {drawn: {}, drawMs: 0};

  // The typical time between decode steps: buckets of the charts are never narrower, so a
  // zoomed-in chart shows one bucket per step instead of gaps between steps.
  const stepPeriod = (() => {
    const ends = [...new Set(D.requests.flatMap((r) => r.rounds.map((x) => x[0])))].sort((a, b) => a - b);
    const gaps = [];
    for (let i = 1; i < ends.length; i++) gaps.push(ends[i] - ends[i - 1]);
    gaps.sort((a, b) => a - b);
    return gaps.length ? Math.max(MIN_NS, gaps[gaps.length >> 1]) : MIN_NS;
  })();

  // ---- formatting -------------------------------------------------------------------------
  function unitOf(ns) {
    const a = Math.abs(ns);
    return a >= 1e9 ? [1e9, "s"] : a >= 1e6 ? [1e6, "ms"] : a >= 1e3 ? [1e3, "µs"] : [1, "ns"];
  }
  // `ns` in the unit its size calls for, to the resolution `step` (default: 3 significant
  // places): 29.5 s, not 29500 ms.
  function fmt(ns, step) {
    if (ns === 0) return "0";
    const [u, name] = unitOf(Math.max(Math.abs(ns), step || 0));
    const digits = step === undefined ? 2 : Math.max(0, Math.ceil(-Math.log10(step / u) - 1e-9));
    return (ns / u).toFixed(Math.min(digits, 6)) + " " + name;
  }
  const exact = (ns) => fmt(ns, 1000);  // Details: to the microsecond, whatever the zoom
  function ticks(a, b, n) {
    const span = b - a;
    let step = Math.pow(10, Math.floor(Math.log10(span / n)));
    for (const m of [1, 2, 5, 10]) if (span / (step * m) <= n) { step *= m; break; }
    const out = [];
    for (let t = Math.ceil(a / step) * step; t <= b; t += step) out.push(t);
    return [out, step];
  }

  // ---- geometry ---------------------------------------------------------------------------
  const xShared = (t) => LABEL_W + ((t - view.t0) / (view.t1 - view.t0)) * PLOT_W;
  function layout() {  // the side panel beside the plots when the window has room, else below
    const room = document.documentElement.clientWidth - 40 - LABEL_W - RIGHT_W;
    PLOT_W = Math.round(Math.max(300, Math.min(1000, room >= 700 + SIDE_W ? room - SIDE_W : room)));
    W = LABEL_W + PLOT_W + RIGHT_W;
    // The plots' column is as wide as its canvases: its text wraps there, never widens it.
    $("plots").style.width = W + "px";
  }
  function xLane(r, t) {
    if (view.mode === "shared") return xShared(t);
    const f = (t - r.start) / Math.max(1, r.dur);
    return LABEL_W + ((f - view.f0) / (view.f1 - view.f0)) * PLOT_W;
  }
  const clampX = (x) => Math.max(LABEL_W, Math.min(LABEL_W + PLOT_W, x));

  function setup(canvas, w, h) {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    return ctx;
  }
  function hatch(ctx, colour) {
    const tile = document.createElement("canvas");
    tile.width = tile.height = 6;
    const t = tile.getContext("2d");
    t.strokeStyle = colour;
    t.lineWidth = 1.5;
    t.beginPath(); t.moveTo(0, 6); t.lineTo(6, 0); t.stroke();
    return ctx.createPattern(tile, "repeat");
  }
  // ---- the waterfall ----------------------------------------------------------------------
  function verifyStyle(a) {
    // Darker the more of the round's drafts were accepted; 5 shades keep fills batched.
    const acc = a[A.accepted], prop = a[A.proposed];
    if (acc === undefined || !prop) return COLOURS.spec_verify + "66";
    const level = Math.round(Math.min(1, acc / prop) * 4);
    return COLOURS.spec_verify + ["59", "7f", "a6", "cc", "ff"][level];
  }

  function drawWaterfall() {
    const h = visible.length * LANE_H + 4;
    const ctx = setup($("waterfall"), W, h);
    const drawn = {};
    // Fill styles batch the rectangles: lane backgrounds first, then the bars over them.
    const back = new Map(), bars = new Map();
    const add = (groups, style, x, y, w, hh) => {
      let g = groups.get(style);
      if (!g) groups.set(style, (g = []));
      g.push(x, y, w, hh);
    };
    const queue = hatch(ctx, "#e8a15e");
    visible.forEach((r, i) => {
      const y = i * LANE_H + 2, error = r.outcome === "error";
      let label = r.id;
      const room = LABEL_W - 10 - (error ? ctx.measureText(" (error)").width : 0);
      while (label.length > 1 && ctx.measureText(label + "…").width > room) label = label.slice(0, -1);
      ctx.fillStyle = error ? ZERO : "#333";
      ctx.fillText((label === r.id ? label : label + "…") + (error ? " (error)" : ""), 4, y + 1.5 * ROW_H);
      ctx.fillStyle = "#333";
      ctx.fillText(fmt(r.dur), LABEL_W + PLOT_W + 6, y + 1.5 * ROW_H);
      const x0 = clampX(xLane(r, r.start)), x1 = clampX(xLane(r, r.end));
      if (x1 > x0) add(back, error ? "#fde0e0" : "#efefef", x0, y, x1 - x0, 3 * ROW_H);
      if (r.queueEnd !== null && r.queueEnd > r.start) {
        const q1 = clampX(xLane(r, r.queueEnd));
        if (q1 > x0) add(back, queue, x0, y, q1 - x0, 3 * ROW_H);
      }
      const b = r.bars;
      for (let k = 0; k < b.length; k += FIELDS) {
        const s = xLane(r, b[k + 1]), e = xLane(r, b[k + 1] + b[k + 2]);
        if (e < LABEL_W || s > LABEL_W + PLOT_W) continue;
        const name = D.names[b[k]];
        drawn[name] = (drawn[name] || 0) + 1;
        const style = b[k] === VERIFY ? verifyStyle(SETS[b[k + 4]]) : COLOURS[name] || OTHER;
        const cs = clampX(s);
        add(bars, style, cs, y + (ROWS[name] ?? 0) * ROW_H, Math.max(1, clampX(e) - cs), ROW_H - 1);
      }
    });
    const fill = (groups) => {
      for (const [style, g] of groups) {
        ctx.fillStyle = style;
        for (let k = 0; k < g.length; k += 4) ctx.fillRect(g[k], g[k + 1], g[k + 2], g[k + 3]);
      }
    };
    fill(back);
    if (view.mode === "shared") {  // tick lines under the bars, so lanes can be compared
      ctx.strokeStyle = "#d8d8d8";
      for (const t of ticks(view.t0 - base, view.t1 - base, 10)[0].map((t) => t + base)) {
        ctx.beginPath(); ctx.moveTo(xShared(t) + 0.5, 0); ctx.lineTo(xShared(t) + 0.5, h); ctx.stroke();
      }
    }
    fill(bars);
    stats.drawn = drawn;
    const i = selected ? visible.indexOf(selected[0]) : -1;
    if (i >= 0) {  // the clicked bar (or lane), outlined
      const [r, k] = selected, y = i * LANE_H + 2;
      let x0 = clampX(xLane(r, r.start)), x1 = clampX(xLane(r, r.end)), top = y, hh = 3 * ROW_H;
      if (k >= 0) {
        x0 = clampX(xLane(r, r.bars[k + 1]));
        x1 = Math.max(x0 + 1, clampX(xLane(r, r.bars[k + 1] + r.bars[k + 2])));
        top = y + (ROWS[D.names[r.bars[k]]] ?? 0) * ROW_H;
        hh = ROW_H - 1;
      }
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 - 1, top - 1, x1 - x0 + 2, hh + 2);
    }
  }

  function drawAxis() {
    const ctx = setup($("axis"), W, 26);
    ctx.fillStyle = "#333";
    ctx.strokeStyle = "#888";
    ctx.beginPath(); ctx.moveTo(LABEL_W, 25.5); ctx.lineTo(LABEL_W + PLOT_W, 25.5); ctx.stroke();
    if (view.mode === "shared") {
      const [ts, step] = ticks(view.t0 - base, view.t1 - base, 10).map((v, i) => (i ? v : v.map((t) => t + base)));
      stats.axis = ts.map((t) => fmt(t - base, step));
      for (const t of ts) tick(ctx, xShared(t), fmt(t - base, step));
      ctx.fillText("since first request", 4, 13);
    } else {
      const [fs, step] = ticks(view.f0 * 1e6, view.f1 * 1e6, 10);
      const digits = Math.max(0, Math.ceil(-Math.log10(step / 1e4) - 1e-9));
      for (const f of fs) {
        tick(ctx, LABEL_W + ((f / 1e6 - view.f0) / (view.f1 - view.f0)) * PLOT_W,
             (f / 1e4).toFixed(Math.min(digits, 4)) + "%");
      }
      ctx.fillText("of each request's life", 4, 13);
    }
  }
  function tick(ctx, x, text) {
    ctx.beginPath(); ctx.moveTo(x + 0.5, 18); ctx.lineTo(x + 0.5, 25); ctx.stroke();
    const w = ctx.measureText(text).width;
    ctx.fillText(text, Math.min(Math.max(x - w / 2, LABEL_W), LABEL_W + PLOT_W - w), 9);
  }

  // ---- charts over time (always on the shared axis) ----------------------------------------
  function buckets() {
    const span = view.t1 - view.t0, n = Math.max(1, Math.min(BUCKETS, Math.floor(span / stepPeriod)));
    const out = Array.from({length: n}, () => ({rounds: 0, acc: 0, prop: 0, batch: 0, width: 0, counted: 0}));
    for (const r of visible) {
      for (const [t, acc, prop, batch, width] of r.rounds) {
        if (t < view.t0 || t > view.t1) continue;
        const b = out[Math.min(n - 1, Math.floor(((t - view.t0) / span) * n))];
        b.rounds += 1;
        if (batch !== undefined) b.batch += batch;
        if (width !== undefined) b.width += width;
        if (acc !== undefined && prop !== undefined) { b.acc += acc; b.prop += prop; b.counted += 1; }
      }
    }
    out.forEach((b, i) => { b.t0 = view.t0 + (span * i) / n; b.t1 = view.t0 + (span * (i + 1)) / n; });
    return out;
  }

  const count = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));  // a mean of counts
  function yAxis(ctx, top, h, max, labelX, side) {
    ctx.fillStyle = "#333";
    for (const frac of [0, 0.5, 1]) {
      const y = top + h * (1 - frac);
      if (side === "left") {
        ctx.strokeStyle = "#ddd";
        ctx.beginPath(); ctx.moveTo(LABEL_W, y + 0.5); ctx.lineTo(LABEL_W + PLOT_W, y + 0.5); ctx.stroke();
      }
      ctx.fillText(String(+(max * frac).toFixed(2)), labelX, y);
    }
  }

  const CH = 110, TOP = 8;
  let lastBuckets = [];
  function drawAcceptance(bs) {
    const ctx = setup($("acceptance"), W, CH + 2 * TOP);
    const bw = PLOT_W / bs.length, empty = hatch(ctx, "#cfcfcf");
    yAxis(ctx, TOP, CH, 1, LABEL_W - 28, "left");
    ctx.fillText("accepted / proposed", 4, TOP + CH / 2);
    bs.forEach((b, i) => {
      const x = LABEL_W + i * bw + 1;
      if (!b.prop) {  // no rounds (or none that proposed): not the same as accepting nothing
        ctx.fillStyle = empty;
        ctx.fillRect(x, TOP, bw - 2, CH);
        return;
      }
      const rate = b.acc / b.prop;
      ctx.fillStyle = rate === 0 ? ZERO : COLOURS.spec_verify;
      const h = rate === 0 ? 3 : CH * rate;
      ctx.fillRect(x, TOP + CH - h, bw - 2, h);
    });
  }

  function drawWidth(bs) {
    const ctx = setup($("width"), W, CH + 2 * TOP);
    const bw = PLOT_W / bs.length, empty = hatch(ctx, "#cfcfcf");
    let maxW = 1, maxB = 1;
    for (const b of bs) if (b.rounds) { maxW = Math.max(maxW, b.width / b.rounds); maxB = Math.max(maxB, b.batch / b.rounds); }
    // Headroom (at their maxima the width sits below the batch line, not under it); both axes
    // end on an even count, so their ticks (0, half, top) are whole numbers of tokens, requests.
    maxW = 2 * Math.ceil(maxW * 1.25 / 2);
    maxB = 2 * Math.ceil(maxB / 2);
    yAxis(ctx, TOP, CH, maxW, LABEL_W - 28, "left");
    yAxis(ctx, TOP, CH, maxB, LABEL_W + PLOT_W + 6, "right");
    ctx.fillStyle = WIDTH_C;
    ctx.fillText("draft width", 4, TOP + CH / 2 - 8);
    ctx.fillStyle = BATCH_C;
    ctx.fillText("batch size (right)", 4, TOP + CH / 2 + 8);
    let prev = null;
    bs.forEach((b, i) => {
      const x = LABEL_W + i * bw;
      if (!b.rounds) {
        ctx.fillStyle = empty;
        ctx.fillRect(x + 1, TOP, bw - 2, CH);
        prev = null;
        return;
      }
      const y = TOP + CH * (1 - b.batch / b.rounds / maxB);
      ctx.fillStyle = BATCH_C;
      ctx.fillRect(x + bw / 2 - 2, y - 2, 4, 4);
      if (prev) {
        ctx.strokeStyle = BATCH_C;
        ctx.beginPath(); ctx.moveTo(prev[0], prev[1]); ctx.lineTo(x + bw / 2, y); ctx.stroke();
      }
      prev = [x + bw / 2, y];
    });
    ctx.fillStyle = WIDTH_C;  // mean width of each bucket's rounds, as a step, over the batch line
    bs.forEach((b, i) => {
      if (b.rounds) ctx.fillRect(LABEL_W + i * bw, TOP + CH * (1 - b.width / b.rounds / maxW) - 1.5, bw, 3);
    });
    // The controller's changes in view: a tick at the top with old→new where there is room.
    stats.changes = [];
    let lastLabel = -Infinity;
    ctx.strokeStyle = WIDTH_C;
    for (const [t, label] of changes) {
      if (t < view.t0 || t > view.t1 || view.mode !== "shared") continue;
      const x = Math.round(xShared(t)) + 0.5;
      stats.changes.push([t, label]);
      ctx.beginPath(); ctx.moveTo(x, TOP); ctx.lineTo(x, TOP + 10); ctx.stroke();
      if (x - lastLabel > 34) {
        ctx.fillStyle = WIDTH_C;
        ctx.fillText(label, x + 2, TOP + 6);
        lastLabel = x;
      }
    }
  }

  function drawPositions() {
    // Per position k: rounds that offered it, that reached it (k-1 accepted), that accepted it.
    const proposed = [], reached = [], accepted = [];
    for (const r of visible) {
      for (const [t, acc, prop] of r.rounds) {
        if (t < view.t0 || t > view.t1 || acc === undefined || prop === undefined) continue;
        for (let k = 1; k <= Math.min(prop, MAX_POSITIONS); k++) {
          proposed[k] = (proposed[k] || 0) + 1;
          if (acc >= k - 1) reached[k] = (reached[k] || 0) + 1;
          if (acc >= k) accepted[k] = (accepted[k] || 0) + 1;
        }
      }
    }
    const n = Math.max(0, proposed.length - 1), rowH = 16, barW = 100;
    const ctx = setup($("positions"), 330, Math.max(20, n * rowH + 8));
    stats.positions = [];
    if (!n) { ctx.fillStyle = "#666"; ctx.fillText("no verify rounds with counts in view", 4, 10); }
    for (let k = 1; k <= n; k++) {
      const rate = (accepted[k] || 0) / proposed[k], y = 4 + (k - 1) * rowH;
      const given = reached[k] ? ((accepted[k] || 0) / reached[k]).toFixed(3) : "n/a";
      stats.positions.push([k, accepted[k] || 0, proposed[k], reached[k] || 0]);
      ctx.fillStyle = "#333";
      ctx.fillText("k=" + k, 2, y + rowH / 2);
      ctx.fillStyle = "#eee";
      ctx.fillRect(36, y + 2, barW, rowH - 4);
      ctx.fillStyle = rate === 0 ? ZERO : COLOURS.spec_verify;
      ctx.fillRect(36, y + 2, Math.max(rate === 0 ? 2 : 0, barW * rate), rowH - 4);
      ctx.fillStyle = "#333";
      ctx.fillText(rate.toFixed(3) + " (" + (accepted[k] || 0) + "/" + proposed[k] + ") · "
        + given + " given k-1", 40 + barW, y + rowH / 2);
    }
  }

  // ---- details ----------------------------------------------------------------------------
  function table(rows) {
    const t = document.createElement("table");
    for (const [k, v] of rows) {
      const tr = t.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = typeof v === "object" ? JSON.stringify(v) : String(v);
    }
    $("details").replaceChildren(t);
    // Details below the plots (a narrow window) come into view; beside them they already are.
    const box = $("details").getBoundingClientRect();
    if (box.top < 0 || box.top > window.innerHeight - 40) $("details").scrollIntoView({block: "nearest"});
  }
  function attrRows(a) { return Object.keys(a).sort().map((k) => [k, a[k]]); }
  function showRequest(r) {
    selected = [r, -1];
    table([["span", r.span ? "spec_request" : "(root not in file)"], ["request", r.id],
           ["outcome", r.outcome], ["status message", r.status || "-"],
           ["start", exact(r.start - base)], ["end", exact(r.end - base)], ["duration", exact(r.dur)],
           ["queue wait", r.queueEnd === null ? "-" : exact(r.queueEnd - r.start)],
           ["trace id", r.trace], ["span id", r.span || "-"], ...attrRows(SETS[r.attrs])]);
    drawWaterfall();
  }
  function showBar(r, k) {
    selected = [r, k];
    const b = r.bars;
    table([["span", D.names[b[k]]], ["request", r.id], ["step", b[k + 3] < 0 ? "-" : b[k + 3]],
           ["start", exact(b[k + 1] - base)], ["end", exact(b[k + 1] + b[k + 2] - base)],
           ["duration", exact(b[k + 2])], ["trace id", r.trace],
           ["span id", b[k + 5]], ...attrRows(SETS[b[k + 4]])]);
    drawWaterfall();
  }
  function clearDetails(why) {
    selected = null;
    const p = document.createElement("p");
    p.textContent = why;
    $("details").replaceChildren(p);
  }
  function showBucket(b, i) {
    table([["bucket", i + 1 + " of " + lastBuckets.length], ["from", exact(b.t0 - base)], ["to", exact(b.t1 - base)],
           ["verify rounds", b.rounds], ["accepted drafts", b.acc], ["proposed drafts", b.prop],
           ["accept rate", b.prop ? (b.acc / b.prop).toFixed(3) : "no rounds here"],
           ["mean draft width", b.rounds ? (b.width / b.rounds).toFixed(2) : "-"],
           ["mean batch size", b.rounds ? (b.batch / b.rounds).toFixed(2) : "-"]]);
  }

  function hit(x, y) {
    const i = Math.floor((y - 2) / LANE_H), r = visible[i];
    if (!r) return null;
    const row = Math.floor((y - 2 - i * LANE_H) / ROW_H);
    let best = -1, bestD = Infinity;
    for (let k = 0; k < r.bars.length; k += FIELDS) {
      if ((ROWS[D.names[r.bars[k]]] ?? 0) !== row) continue;
      const s = xLane(r, r.bars[k + 1]), e = Math.max(s + 1, xLane(r, r.bars[k + 1] + r.bars[k + 2]));
      if (x < s - 2 || x > e + 2) continue;
      const d = Math.abs(x - (s + e) / 2);
      if (d < bestD) { bestD = d; best = k; }
    }
    return [r, best];
  }

  // ---- control ----------------------------------------------------------------------------
  const SORTS = {
    start: (r) => r.start, dur: (r) => r.dur, rounds: (r) => r.rounds.length,
    rate: (r) => (r.rate === null ? -1 : r.rate), outcome: (r) => r.outcome,
  };
  function refilter() {
    // What the tooltip described may be filtered out: it goes until the pointer moves again.
    const shown = document.getElementById("tooltip");
    if (shown) shown.style.display = "none";
    const outcome = $("filter-outcome").value, text = $("filter-id").value.trim();
    const inRun = (r) => r.run === run;
    const number = (id) => ($(id).value === "" ? null : Number($(id).value));
    const maxRate = number("filter-rate"), minMs = number("filter-dur");
    const minRounds = number("filter-rounds");
    visible = D.requests.filter((r) => inRun(r) && (!outcome || r.outcome === outcome)
      && (!text || r.id.includes(text))
      && (maxRate === null || (r.rate !== null && r.rate <= maxRate))
      && (minMs === null || r.dur >= minMs * 1e6)
      && (minRounds === null || r.rounds.length >= minRounds));
    const key = SORTS[$("sort-key").value], sign = $("sort-desc").checked ? -1 : 1;
    visible.sort((a, b) => {
      const ka = key(a), kb = key(b);
      return (ka < kb ? -sign : ka > kb ? sign : 0) || a.start - b.start;
    });
    sorted = visible;
    if (selected && !visible.includes(selected[0])) clearDetails("The selected request is filtered out.");
    redraw();
  }
  let sorted = visible;  // the filter's order; zoomed in, requests with something in view lead
  function inViewFirst() {
    if (view.mode !== "shared" || (view.t0 <= RUNS[run].start && view.t1 >= runEnd)) return sorted.slice();
    const inView = (r) => r.start < view.t1 && r.end > view.t0;
    return sorted.filter(inView).concat(sorted.filter((r) => !inView(r)));
  }

  function redraw() {
    const began = performance.now();
    visible = inViewFirst();
    lastBuckets = buckets();
    drawAcceptance(lastBuckets);
    drawWidth(lastBuckets);
    drawAxis();
    drawWaterfall();
    drawPositions();
    const carried = D.requests.length - D.shown_orphans;
    const left = D.total_requests - carried, leftLanes = D.total_orphans - D.shown_orphans;
    const more = left > 0 || leftLanes > 0
      ? " (the page carries " + D.chosen_by + ": " + carried + " of " + D.total_requests
        + " requests" + (D.total_orphans ? ", " + D.shown_orphans + " of " + D.total_orphans
        + " traces without a root" : "") + "; choose others with report --select "
        + D.select_forms + ")" : "";
    const range = view.mode === "shared"
      ? fmt(view.t0 - base) + " – " + fmt(view.t1 - base) + " (" + fmt(view.t1 - view.t0) + ")"
      : (view.f0 * 100).toFixed(2) + "% – " + (view.f1 * 100).toFixed(2) + "% of each request";
    const ofRun = D.runs > 1 ? " of run " + (run + 1) : "";
    $("status").textContent = "Showing " + visible.length + " of "
      + D.requests.filter((r) => r.run === run).length + " requests" + ofRun + more + "; view " + range + ".";
    stats.drawMs = performance.now() - began;
  }

  function zoomTo(canvas, a, b) {
    const lo = (Math.min(a, b) - LABEL_W) / PLOT_W, hi = (Math.max(a, b) - LABEL_W) / PLOT_W;
    const f0 = Math.max(0, lo), f1 = Math.min(1, hi);
    if (f1 <= f0) return;
    if (view.mode === "request" && canvas.id !== "acceptance" && canvas.id !== "width") {
      const w = view.f1 - view.f0, n0 = view.f0 + f0 * w, n1 = view.f0 + f1 * w;
      const mid = (n0 + n1) / 2, half = Math.max(n1 - n0, 1e-6) / 2;
      [view.f0, view.f1] = [mid - half, mid + half];
    } else {
      const w = view.t1 - view.t0, n0 = view.t0 + f0 * w, n1 = view.t0 + f1 * w;
      const mid = (n0 + n1) / 2, half = Math.max(n1 - n0, MIN_NS) / 2;
      [view.t0, view.t1] = [mid - half, mid + half];
    }
    redraw();
  }
  function reset() {
    Object.assign(view, {t0: RUNS[run].start, t1: runEnd, f0: 0, f1: 1});
    redraw();
  }
  // Zoom by `factor` (> 1: out) around the fraction `at` of the plot, or pan by `shift` plots;
  // kept inside the run (the per-request axis: inside each life).
  function zoomAround(at, factor, shift = 0) {
    const clampRange = (a, b, lo, hi, minW) => {
      let w = Math.min(hi - lo, Math.max(minW, b - a));
      a = Math.max(lo, Math.min(a, hi - w));
      return [a, a + w];
    };
    if (view.mode === "request") {
      const w = view.f1 - view.f0, c = view.f0 + at * w + shift * w;
      [view.f0, view.f1] = clampRange(c - at * w * factor, c + (1 - at) * w * factor, 0, 1, 1e-6);
    } else {
      const w = view.t1 - view.t0, c = view.t0 + at * w + shift * w;
      [view.t0, view.t1] = clampRange(c - at * w * factor, c + (1 - at) * w * factor,
                                      RUNS[run].start, runEnd, MIN_NS);
    }
    redraw();
  }
  const zoomOut = () => zoomAround(0.5, 3);

  const band = document.createElement("div");
  band.style.cssText = "position:absolute;background:rgba(66,133,244,.18);border:1px solid "
    + "rgba(66,133,244,.7);pointer-events:none;display:none";
  document.body.appendChild(band);
  let drag = null;
  function local(canvas, ev) {
    const box = canvas.getBoundingClientRect();
    return [ev.clientX - box.left, ev.clientY - box.top, box];
  }
  for (const canvas of document.querySelectorAll(".timeplot")) {
    canvas.addEventListener("mousedown", (ev) => {
      const [x] = local(canvas, ev);
      drag = {canvas, x, moved: false};
      ev.preventDefault();
    });
    canvas.addEventListener("dblclick", reset);
  }
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const [x, , box] = local(drag.canvas, ev);
    if (Math.abs(x - drag.x) < 4) return;
    drag.moved = true;
    const a = clampX(Math.min(x, drag.x)), b = clampX(Math.max(x, drag.x));
    Object.assign(band.style, {display: "block", left: box.left + window.scrollX + a + "px",
      top: box.top + window.scrollY + "px", width: b - a + "px", height: box.height + "px"});
  });
  window.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const {canvas, x: x0, moved} = drag;
    drag = null;
    band.style.display = "none";
    const [x, y] = local(canvas, ev);
    if (moved) return zoomTo(canvas, x0, x);
    if (canvas.id === "waterfall") {
      const found = hit(x, y);
      if (found) found[1] < 0 ? showRequest(found[0]) : showBar(found[0], found[1]);
    } else if (canvas.id === "acceptance" || canvas.id === "width") {
      const i = Math.floor(((x - LABEL_W) / PLOT_W) * lastBuckets.length);
      if (i >= 0 && i < lastBuckets.length) showBucket(lastBuckets[i], i);
    }
  });

  const tip = document.createElement("div");
  tip.id = "tooltip";
  document.body.appendChild(tip);
  function tipText(canvas, x, y) {
    if (canvas.id === "waterfall") {
      const found = hit(x, y);
      if (!found) return null;
      const [r, k] = found;
      if (k < 0) return r.id + " · " + r.outcome + " · " + fmt(r.dur);
      const a = SETS[r.bars[k + 4]], counts = a[A.accepted] === undefined ? ""
        : " · accepted " + a[A.accepted] + "/" + a[A.proposed];
      return D.names[r.bars[k]] + (r.bars[k + 3] < 0 ? "" : " · step " + r.bars[k + 3])
        + " · " + fmt(r.bars[k + 2]) + counts + " · " + r.id;
    }
    if (canvas.id === "acceptance" || canvas.id === "width") {
      const i = Math.floor(((x - LABEL_W) / PLOT_W) * lastBuckets.length), b = lastBuckets[i];
      if (!b) return null;
      return b.rounds ? b.rounds + " rounds · accept rate " + (b.prop ? (b.acc / b.prop).toFixed(3) : "-")
        + " · batch " + count(b.batch / b.rounds) + " · width " + count(b.width / b.rounds)
        : "no verify rounds here";
    }
    return null;
  }
  for (const canvas of document.querySelectorAll(".timeplot")) {
    canvas.addEventListener("wheel", (ev) => {  // zoom around the pointer; shift or sideways: pan
      const [x] = local(canvas, ev);
      const at = Math.max(0, Math.min(1, (x - LABEL_W) / PLOT_W));
      const sideways = ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY);
      ev.preventDefault();
      if (sideways) zoomAround(at, 1, ((ev.deltaX || ev.deltaY) / PLOT_W));
      else zoomAround(at, Math.exp(Math.max(-1, Math.min(1, ev.deltaY * 0.002))));
    }, {passive: false});
    canvas.addEventListener("mousemove", (ev) => {
      const [x, y] = local(canvas, ev), text = drag ? null : tipText(canvas, x, y);
      tip.style.display = text ? "block" : "none";
      if (text) {
        tip.textContent = text;
        Object.assign(tip.style, {left: ev.pageX + 12 + "px", top: ev.pageY + 14 + "px"});
      }
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  }
  // Keys (outside the filter fields): arrows pan, + and - zoom, 0 resets, [ and ] step through
  // the selected request's bars, Escape clears the selection.
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const keys = {
      ArrowLeft: () => zoomAround(0.5, 1, -0.2), ArrowRight: () => zoomAround(0.5, 1, 0.2),
      "+": () => zoomAround(0.5, 0.5), "=": () => zoomAround(0.5, 0.5), "-": zoomOut, "0": reset,
      Escape: () => clearDetails("Click a bar, a lane or a chart bucket."),
      "[": () => stepSelection(-1), "]": () => stepSelection(1),
    };
    const act = keys[ev.key];
    if (act) { ev.preventDefault(); act(); }
  });
  function stepSelection(dir) {
    if (!selected) return;
    const [r, k] = selected, n = r.bars.length / FIELDS;
    if (!n) return;
    const next = k < 0 ? (dir > 0 ? 0 : n - 1) : Math.max(0, Math.min(n - 1, k / FIELDS + dir));
    showBar(r, next * FIELDS);
  }

  // ---- start ------------------------------------------------------------------------------
  $("title").textContent = D.title;
  $("summary").textContent = D.summary;
  const legend = [["spec_draft", COLOURS.spec_draft], ["spec_verify (darker: more accepted)", COLOURS.spec_verify],
    ["spec_draft_extend", COLOURS.spec_draft_extend], ["prefill", COLOURS.prefill],
    ["decode", COLOURS.decode], ["other stages", OTHER]];
  $("legend").innerHTML = legend.map(([n, c]) => `<span><i style="background:${c}"></i>${n}</span>`).join("")
    + '<span><i style="background:repeating-linear-gradient(135deg,#e8a15e 0 2px,#fff 2px 5px)"></i>queue wait</span>'
    + '<span><i style="background:repeating-linear-gradient(135deg,#cfcfcf 0 2px,#fff 2px 5px)"></i>no verify rounds here</span>'
    + `<span><i style="background:${ZERO}"></i>rounds that accepted 0</span>`;
  const outcomes = [...new Set(D.requests.map((r) => r.outcome))].sort();
  for (const o of outcomes) $("filter-outcome").add(new Option(o, o));
  for (const id of ["sort-key", "sort-desc", "filter-outcome"]) $(id).addEventListener("change", refilter);
  for (const id of ["filter-rate", "filter-dur", "filter-rounds", "filter-id"]) {
    $(id).addEventListener("input", refilter);
  }
  $("axis-mode").addEventListener("change", () => { view.mode = $("axis-mode").value; redraw(); });
  $("zoom-reset").addEventListener("click", reset);
  $("zoom-out").addEventListener("click", zoomOut);
  if (D.runs > 1) {  // runs appended to one file: one at a time, each on its own axis
    for (let i = 0; i < D.runs; i++) {
      const n = D.requests.filter((r) => r.run === i).length;
      $("run").add(new Option("run " + (i + 1) + " (" + n + " requests)", String(i)));
    }
    $("run-box").hidden = false;
    $("run").addEventListener("change", () => {
      run = Number($("run").value);
      [base, runEnd] = [RUNS[run].start, RUNS[run].end];
      clearDetails("Click a bar, a lane or a chart bucket.");
      Object.assign(view, {t0: base, t1: runEnd, f0: 0, f1: 1});
      refilter();
    });
  }
  let resizing = false;
  window.addEventListener("resize", () => {
    if (resizing) return;
    resizing = true;
    requestAnimationFrame(() => { resizing = false; layout(); redraw(); });
  });
  layout();
  refilter();

  // For tests and scripts: what was drawn where, in page (client) coordinates.
  window.specTrace = {
    renderMs: performance.now(),
    stats,
    view: () => Object.assign({}, view),
    layout: () => ({plotWidth: PLOT_W, labelWidth: LABEL_W}),
    selected: () => (selected ? {id: selected[0].id, bar: selected[1] < 0 ? -1 : selected[1] / FIELDS} : null),
    order: () => visible.map((r) => r.id),
    buckets: () => lastBuckets.map((b) => Object.assign({}, b)),
    bars(id) {
      const r = D.requests.find((q) => q.id === id), out = [];
      for (let k = 0; k < r.bars.length; k += FIELDS) {
        out.push({name: D.names[r.bars[k]], start: r.bars[k + 1], dur: r.bars[k + 2],
                  step: r.bars[k + 3], span: r.bars[k + 5]});
      }
      return out;
    },
    request(id) {
      const r = D.requests.find((q) => q.id === id);
      return {start: r.start, dur: r.dur, queueEnd: r.queueEnd, outcome: r.outcome};
    },
    // Client y of the middle of row `row` of request `id`'s lane, scrolled into view first.
    laneY(id, row) {
      const i = visible.findIndex((q) => q.id === id), y = i * LANE_H + 2 + row * ROW_H + ROW_H / 2;
      const box = $("lanes-box");
      box.scrollTop = Math.max(0, y - box.clientHeight / 2);
      const c = $("waterfall").getBoundingClientRect();
      if (c.top + y < 0 || c.top + y > window.innerHeight) window.scrollBy(0, c.top + y - window.innerHeight / 2);
      return $("waterfall").getBoundingClientRect().top + y - 0.5;
    },
    // The visible centre of bar `index` of request `id`.
    barPoint(id, index) {
      const r = visible.find((q) => q.id === id), k = index * FIELDS;
      const y = this.laneY(id, ROWS[D.names[r.bars[k]]] ?? 0);
      const c = $("waterfall").getBoundingClientRect();
      const s = clampX(xLane(r, r.bars[k + 1])), e = clampX(xLane(r, r.bars[k + 1] + r.bars[k + 2]));
      return {x: c.left + (s + Math.max(s + 1, e)) / 2, y, x0: c.left + s, x1: c.left + Math.max(s + 1, e)};
    },
    // Client x of time t (ns since the first request) on a time plot, in the shared view.
    xOf(canvasId, t) { return $(canvasId).getBoundingClientRect().left + xShared(t); },
  };
})();
