// The leaderboard page: draws the tables, plots and filters of window.LEADERBOARD (data.js, written by
// `advlora leaderboard`). Vanilla JS, no network: every row is built once; sorting moves the existing rows.
"use strict";
(function () {
  const D = window.LEADERBOARD;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const stat = (s) => (s === null || s === undefined) ? "–"
    : (s[1] > 0 ? `${s[0].toFixed(1)} ± ${s[1].toFixed(1)}` : s[0].toFixed(1));
  const num = (v, digits) => (v === null || v === undefined) ? "–" : Number(v).toFixed(digits);
  const count = (v) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString("en");

  // ---- columns: label, cell text, sort key (numbers sort descending first, text ascending) -------------------
  function measuredColumns(t) {
    const cols = [
      {name: "rank", key: (r) => r.rank ?? null, cell: (r) => r.flagged ? "⚠" : (r.rank ?? "–"), num: true},
      {name: "backbone", key: (r) => r.backbone, cell: (r) => r.backbone, text: true},
      {name: "method", key: (r) => r.label, cell: (r) => r.label === r.method ? r.method : `${r.label} (${r.method})`,
       text: true},
      {name: "family", key: (r) => r.family, cell: (r) => r.family, text: true},
      {name: "objective", key: (r) => r.objective, cell: (r) => r.objective, text: true},
      {name: "trainable", key: (r) => r.trainable, num: true,
       cell: (r) => count(r.trainable) + (r.trainable_from === "bench" ? "*" : "")},
      {name: "step/LoRA", key: (r) => r.step_vs_lora, cell: (r) => num(r.step_vs_lora, 2), num: true},
      {name: "peak/full", key: (r) => r.peak_vs_full, cell: (r) => num(r.peak_vs_full, 2), num: true},
      {name: `clean ${t.metric}`, key: (r) => r.clean && r.clean[0], cell: (r) => stat(r.clean), num: true},
      {name: `robust ${t.metric}`, key: (r) => r.robust && r.robust[0], cell: (r) => stat(r.robust), num: true,
       cls: "robust"},
    ];
    for (const a of t.attacks) {
      cols.push({name: a, key: (r) => r.attacks[a] && r.attacks[a][0], cell: (r) => stat(r.attacks[a]), num: true});
    }
    if (t.rows.some((r) => r.suite)) {
      cols.push({name: "suite", key: (r) => r.suite && r.suite[0], cell: (r) => stat(r.suite), num: true});
    }
    cols.push({name: "sanity", key: (r) => (r.flagged ? 1 : 0), text: true,
               cell: (r) => r.flagged ? "⚠ masking?" : (r.verdict.startsWith("not") ? "not checked" : "ok")});
    cols.push({name: "seeds", key: (r) => r.seeds, cell: (r) => r.seeds, num: true});
    cols.push({name: "provenance", key: null, cell: null, text: true});
    return cols;
  }
  function reportedColumns(t) {
    return [
      {name: "model", key: (r) => r.backbone, cell: (r) => r.backbone, text: true},
      {name: "method", key: (r) => r.method, cell: (r) => r.method, text: true},
      {name: "family", key: (r) => r.family, cell: (r) => r.family, text: true},
      {name: "objective", key: (r) => r.objective, cell: (r) => r.objective, text: true},
      {name: `clean ${t.metric}`, key: (r) => r.clean && r.clean[0], cell: (r) => stat(r.clean), num: true},
      {name: `robust ${t.metric}`, key: (r) => r.robust && r.robust[0], cell: (r) => stat(r.robust), num: true},
      {name: "attack", key: (r) => r.train_attack, cell: (r) => r.train_attack, text: true},
      {name: "source", key: (r) => r.source, cell: (r) => r.source, text: true},
    ];
  }

  // ---- provenance -------------------------------------------------------------------------------------------
  function provenance(r) {
    const list = el("ol");
    for (const p of r.provenance) {
      const parts = [];
      for (const k of ["seed", "file", "command", "commit", "machine", "protocol", "time", "n_images", "source",
                       "attack"]) {
        if (p[k] !== null && p[k] !== undefined) parts.push(el("span", {}, `${k}: `, el("code", {text: String(p[k])}),
                                                                 "  "));
      }
      list.append(el("li", {}, ...parts));
    }
    return el("div", {}, el("div", {text: `sanity: ${r.verdict}`}), list);
  }

  // ---- one table: rows built when first shown; at most `limit` of the filtered, sorted rows are in the DOM ------
  const PAGE = 500;
  const TABLES = [];
  function drawTable(t, parent, reported) {
    const cols = reported ? reportedColumns(t) : measuredColumns(t);
    const head = el("tr");
    const tbody = el("tbody");
    const table = el("table", {id: `t-${t.id}`, "data-kind": t.kind}, el("thead", {}, head), tbody);
    const state = {t, cols, tbody, rows: [], sortCol: null, desc: true, plots: [], reported, limit: PAGE};
    cols.forEach((c, ci) => {
      const th = el("th", {"data-col": c.name, class: c.text ? "text" : null, text: c.name});
      if (c.key) th.addEventListener("click", () => sortBy(state, ci, th));
      head.append(th);
    });
    state.rows = t.rows.map((r, i) => ({r, i, tr: null, shown: true}));
    parent.append(el("div", {class: "tablewrap"}, table));
    TABLES.push(state);
    render(state);
    return state;
  }

  function buildRow(state, x) {
    const {r, i} = x, t = state.t;
    const tr = el("tr", {class: ["row", r.flagged ? "flagged" : "", r.pareto_clean ? "front" : ""].join(" ").trim(),
                         "data-family": r.family, "data-objective": r.objective, "data-backbone": r.backbone});
    for (const c of state.cols) {
      if (c.cell === null) {
        const id = `p-${t.id}-${i}`;
        const a = el("a", {href: `#${id}`, text: "provenance"});
        a.addEventListener("click", (ev) => { ev.preventDefault(); toggleDetail(state, tr, r, id); });
        tr.append(el("td", {class: "text"}, a));
        tr.dataset.prov = id;
        continue;
      }
      const td = el("td", {class: [c.text ? "text" : "", c.cls || ""].join(" ").trim() || null,
                           text: String(c.cell(r))});
      if (c.name === "sanity" && r.flagged) { td.classList.add("flag"); td.title = r.verdict; }
      if (c.name === "rank" && r.flagged) { td.classList.add("flag"); td.title = "not ranked: " + r.verdict; }
      tr.append(td);
    }
    return tr;
  }

  // the first `limit` shown rows in their order, then a row offering the rest
  function render(state) {
    const frag = document.createDocumentFragment();
    const shown = state.rows.filter((x) => x.shown);
    for (const x of shown.slice(0, state.limit)) {
      x.tr = x.tr || buildRow(state, x);
      frag.append(x.tr);
    }
    if (shown.length > state.limit) {
      const more = el("button", {type: "button", text: `show ${Math.min(PAGE, shown.length - state.limit)} more ` +
                                 `(${shown.length - state.limit} not drawn)`});
      more.addEventListener("click", () => { state.limit += PAGE; render(state); });
      frag.append(el("tr", {class: "more"}, el("td", {colspan: String(state.cols.length), class: "text"}, more)));
    }
    state.tbody.replaceChildren(frag);
  }

  function toggleDetail(state, tr, r, id) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("detail")) { next.remove(); return; }
    const d = el("tr", {class: "detail", id}, el("td", {colspan: String(state.cols.length)}, provenance(r)));
    tr.after(d);
    history.replaceState(null, "", `#${id}`);
  }

  function compare(a, b, text, desc) {
    const na = a === null || a === undefined, nb = b === null || b === undefined;
    if (na || nb) return na === nb ? 0 : (na ? 1 : -1);         // missing values last, either way
    const c = text ? (a < b ? -1 : a > b ? 1 : 0) : a - b;
    return desc ? -c : c;
  }

  function sortBy(state, ci, th) {
    const col = state.cols[ci];
    state.desc = state.sortCol === ci ? !state.desc : !col.text && col.name !== "rank";
    state.sortCol = ci;
    for (const h of th.parentNode.children) h.classList.remove("sorted-asc", "sorted-desc");
    th.classList.add(state.desc ? "sorted-desc" : "sorted-asc");
    const keyed = state.rows.map((x) => [col.key(x.r), x]);
    keyed.sort((p, q) => compare(p[0], q[0], col.text, state.desc) || p[1].i - q[1].i);
    state.rows = keyed.map((p) => p[1]);
    render(state);
  }

  // ---- plots ------------------------------------------------------------------------------------------------
  function plot(title, points, xLabel, yLabel, logX) {
    const W = 360, H = 260, L = 46, R = 12, T = 22, B = 36;
    const s = svg("svg", {class: "plot", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"});
    s.append(Object.assign(svg("title"), {textContent: title}));
    const txt = (x, y, t, anchor, rot) => {
      const e = svg("text", {x, y, "text-anchor": anchor || "middle"});
      if (rot) e.setAttribute("transform", `rotate(-90 ${x} ${y})`);
      e.textContent = t; s.append(e);
    };
    txt(W / 2, 14, title);
    txt(W / 2, H - 6, xLabel);
    txt(12, T + (H - T - B) / 2, yLabel, "middle", true);
    s.append(svg("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}));
    s.append(svg("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}));
    const pts = points.filter((p) => p.x !== null && p.y !== null && (!logX || p.x > 0));
    if (!pts.length) { txt(W / 2, H / 2, "no points"); return s; }
    const fx = logX ? Math.log10 : (v) => v;
    let [x0, x1] = [Math.min(...pts.map((p) => fx(p.x))), Math.max(...pts.map((p) => fx(p.x)))];
    let [y0, y1] = [Math.min(0, ...pts.map((p) => p.y)), Math.max(...pts.map((p) => p.y))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y1 += 1; }
    const sx = (v) => L + (fx(v) - x0) / (x1 - x0) * (W - L - R - 6) + 3;
    const sy = (v) => H - B - (v - y0) / (y1 - y0) * (H - T - B - 6) - 3;
    txt(L, H - B + 13, logX ? count(Math.round(10 ** x0)) : x0.toFixed(0), "start");
    txt(W - R, H - B + 13, logX ? count(Math.round(10 ** x1)) : x1.toFixed(0), "end");
    txt(L - 4, H - B, y0.toFixed(0), "end");
    txt(L - 4, T + 8, y1.toFixed(0), "end");
    const front = pts.filter((p) => p.front).sort((a, b) => a.x - b.x);
    if (front.length > 1) {
      s.append(svg("polyline", {class: "frontline", points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ")}));
    }
    for (const p of pts) {
      const cx = sx(p.x), cy = sy(p.y);
      if (p.flagged) {
        s.append(svg("path", {class: "cross", d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}`}));
      } else {
        const c = svg("circle", {class: p.front ? "pt front" : "pt", cx, cy, r: p.front ? 4 : 3});
        c.append(Object.assign(svg("title"), {textContent: p.label}));
        s.append(c);
      }
    }
    return s;
  }

  function drawPlots(state) {
    for (const p of state.plots) p.remove();
    state.plots = [];
    const shown = state.rows.filter((x) => x.shown).map((x) => x.r);
    const name = (r) => `${r.backbone} ${r.label} ${r.objective}`;
    const box = el("div", {class: "plots"});
    box.append(plot(`robust vs clean ${state.t.metric}`,
                    shown.map((r) => ({x: r.clean && r.clean[0], y: r.robust && r.robust[0], front: r.pareto_clean,
                                       flagged: r.flagged, label: name(r)})), `clean ${state.t.metric}`,
                    `robust ${state.t.metric}`, false));
    box.append(plot(`robust ${state.t.metric} vs trainable parameters`,
                    shown.map((r) => ({x: r.trainable, y: r.robust && r.robust[0], front: r.pareto_params,
                                       flagged: r.flagged, label: name(r)})), "trainable parameters (log)",
                    `robust ${state.t.metric}`, true));
    box.append(el("p", {class: "plotnote", text: "red: the Pareto front (no unflagged row is better in both); " +
      "×: flagged by the sanity checks (possible gradient masking), never on a front; trainable* counts are " +
      "the method's at the bench size"}));
    state.anchor.after(box);
    state.plots.push(box);
  }

  // ---- filters ----------------------------------------------------------------------------------------------
  const FILTERS = ["family", "objective", "backbone"];
  function fillFilters() {
    for (const f of FILTERS) {
      const values = new Set();
      for (const t of D.measured) for (const r of t.rows) values.add(r[f]);
      const sel = document.getElementById(`f-${f}`);
      sel.append(el("option", {value: "", text: "all"}));
      for (const v of [...values].sort()) sel.append(el("option", {value: v, text: v}));
      sel.addEventListener("change", applyFilters);
    }
  }
  function applyFilters() {
    const want = Object.fromEntries(FILTERS.map((f) => [f, document.getElementById(`f-${f}`).value]));
    let shown = 0, total = 0;
    for (const state of TABLES) {
      if (state.reported) continue;
      for (const x of state.rows) {
        x.shown = FILTERS.every((f) => !want[f] || x.r[f] === want[f]);
        shown += x.shown; total += 1;
      }
      render(state);
      drawPlots(state);
    }
    document.getElementById("shown").textContent = `${shown} of ${total} measured rows shown`;
  }

  // ---- the page ---------------------------------------------------------------------------------------------
  function caption(t) {
    return `${t.task} · ${t.dataset} · ${t.threat} · protocol ${t.protocol}`;
  }
  function main() {
    const m = D.meta || {};
    if (m.title) document.querySelector("h1").after(el("p", {class: "title", text: m.title}));
    document.getElementById("meta").textContent = [
      m.command && `Built by: ${m.command}`, m.commit && `commit ${m.commit.slice(0, 12)}`, m.machine,
      m.time, `${D.n_files} results files`].filter(Boolean).join(" · ");
    document.getElementById("bench").textContent = D.bench_source
      ? `read from ${D.bench_source} (size ${D.bench_size}); trainable* = the method's count at that size`
      : "(no bench --methods file given: no cost figures)";
    const toc = document.getElementById("toc");
    const measured = document.getElementById("measured");
    if (!D.measured.length) measured.append(el("p", {text: "No measured results."}));
    for (const t of D.measured) {
      const h = el("h3", {id: t.id, text: caption(t)});
      measured.append(h);
      toc.append(el("a", {href: `#${t.id}`, text: `${t.dataset} ${t.threat}`}));
      const state = drawTable(t, measured, false);
      state.anchor = h;
    }
    const rep = document.getElementById("reported");
    if (D.reported.length) {
      rep.append(el("h2", {text: "Reported (published numbers, not measured here)"}));
      rep.append(el("p", {class: "reported-note", text: "Copied from their sources as printed; protocols differ " +
        "between sources and from the measured tables above, so these rows are never ranked with measured ones."}));
      for (const t of D.reported) {
        rep.append(el("h3", {id: t.id, text: caption(t)}));
        drawTable(t, rep, true);
      }
    }
    fillFilters();
    applyFilters();
    const hash = decodeURIComponent(location.hash.slice(1));
    if (hash.startsWith("p-")) {
      for (const state of TABLES) {
        const x = state.rows.find((y) => `p-${state.t.id}-${y.i}` === hash);
        if (x) {
          state.limit = Math.max(state.limit, state.rows.indexOf(x) + 1);
          render(state);
          toggleDetail(state, x.tr, x.r, hash);
          x.tr.scrollIntoView();
        }
      }
    }
  }
  main();
})();
