// The jobs page: live list, filters, uploads and the throughput chart.
"use strict";

(() => {
  const {el, getJSON, onChange, csrf, human} = conveyor;
  const params = new URLSearchParams(location.search);
  const tbody = document.getElementById("jobs");

  // ---- the list ----
  let pending = null;
  function refreshSoon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 150);
  }

  async function refresh() {
    const q = new URLSearchParams();
    for (const k of ["state", "q", "page"]) if (params.get(k)) q.set(k, params.get(k));
    let p;
    try { p = await getJSON("/api/jobs?" + q.toString()); } catch (e) { return; }
    renderRows(p);
    renderCounts(p.counts, p.all, p.ready);
    document.getElementById("pageinfo").textContent = "page " + p.page + " of " + p.pages + " · " + p.total + " jobs";
    document.getElementById("prev").hidden = p.page <= 1;
    document.getElementById("next").hidden = p.page >= p.pages;
  }

  function renderRows(p) {
    const before = new Map();
    for (const tr of tbody.querySelectorAll("tr[data-id]")) before.set(tr.dataset.id, tr.dataset.sig);
    const rows = p.jobs.map((j) => {
      const outs = el("td", {class: "outs"});
      j.outputs = j.outputs || [];
      j.outputs.forEach((name, i) => {
        outs.append(el("a", {href: "/jobs/" + j.id + "/outputs/" + i, download: true}, name), " ");
      });
      if (j.n_outputs > j.outputs.length) outs.append(el("a", {href: "/jobs/" + j.id + "#outputs"}, "+" + j.n_outputs));
      const sig = [j.state, j.attempt, j.max_attempts, j.size, j.running, j.n_outputs].join("|");
      const tr = el("tr", {dataset: {id: j.id, sig: sig}},
        el("td", {class: "key"}, el("a", {href: "/jobs/" + j.id}, j.key)),
        el("td", {class: "num"}, j.size_text),
        el("td", {}, el("span", {class: "state st-" + j.state}, j.state)),
        el("td", {class: "num"}, j.attempt + "/" + j.max_attempts),
        el("td", {class: "num"}, j.queued),
        el("td", {class: "num"}, j.running),
        outs,
        el("td", {class: "when"}, j.created));
      if (rendered && (before.has(j.id) ? before.get(j.id) !== sig : before.size > 0)) tr.classList.add("flash");
      return tr;
    });
    if (rows.length === 0) {
      const filtered = params.get("state") || params.get("q");
      rows.push(el("tr", {class: "empty"}, el("td", {colspan: 8, class: "muted"}, filtered ? "No jobs match." : "No jobs yet: drop a file above.")));
    }
    tbody.replaceChildren(...rows);
    rendered = true;
  }

  function renderCounts(counts, all, ready) {
    for (const b of document.querySelectorAll("[data-count]")) {
      const s = b.dataset.count;
      b.textContent = s === "" ? all : (counts[s] || 0);
    }
    document.getElementById("total").textContent = all;
    const loading = document.getElementById("loading");
    if (loading && ready) loading.remove();
  }

  // The first refresh replaces the server-rendered rows: nothing to flash.
  let rendered = false;

  onChange((ev) => {
    renderCounts(ev.counts, ev.total, ev.ready);
    if (ev.all || ev.ids.length > 0) refreshSoon();
    chartSoon();
  });

  // ---- uploads: a drop zone that is also a file input ----
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  const prefix = document.getElementById("prefix");
  const list = document.getElementById("uploads");
  prefix.addEventListener("input", () => { document.getElementById("prefix-shown").textContent = prefix.value; });
  for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); uploadAll(e.dataTransfer.files); });
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });

  // Uploads run two at a time; each streams the file as the request body.
  let queue = [], running = 0;
  function uploadAll(files) {
    for (const f of files) queue.push(f);
    pump();
  }
  function pump() {
    while (running < 2 && queue.length > 0) {
      running++;
      upload(queue.shift()).finally(() => { running--; pump(); });
    }
  }
  function upload(file) {
    const key = prefix.value + file.name;
    const bar = el("progress", {max: file.size || 1, value: 0});
    const status = el("span", {class: "status"}, "0%");
    const li = el("li", {class: "upload"}, el("span", {class: "name", title: key}, key), bar, status);
    list.prepend(li);
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/upload?key=" + encodeURIComponent(key));
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      if (file.type) xhr.setRequestHeader("Content-Type", file.type);
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; status.textContent = Math.floor(100 * e.loaded / e.total) + "%"; }
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 200) {
          bar.value = bar.max;
          let res = {};
          try { res = JSON.parse(xhr.responseText); } catch (e) {}
          status.replaceChildren(res.job_id ? el("a", {href: "/jobs/" + res.job_id}, "done") : "done");
          li.classList.add("done");
        } else {
          status.textContent = "failed";
          status.title = xhr.responseText;
          li.classList.add("failed");
        }
        resolve();
      });
      xhr.addEventListener("error", () => { status.textContent = "failed"; li.classList.add("failed"); resolve(); });
      xhr.send(file);
    });
  }

  // ---- throughput: two small SVG charts ----
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function chart(box, values, opts) {
    const W = 600, H = 90, L = 34, B = 14;
    const maxV = Math.max(1, ...values);
    const s = svg("svg", {viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img"});
    s.append(svg("title", {}, box.dataset.title));
    s.append(svg("line", {class: "axis", x1: L, y1: H - B, x2: W, y2: H - B}));
    s.append(svg("text", {x: 0, y: 10}, opts.fmt(maxV)));
    s.append(svg("text", {x: 0, y: H - B}, "0"));
    s.append(svg("text", {x: L, y: H - 2}, "-60 min"));
    s.append(svg("text", {x: W - 24, y: H - 2}, "now"));
    const step = (W - L) / values.length;
    if (opts.line) {
      const pts = values.map((v, i) => (L + step * (i + 0.5)).toFixed(1) + "," + (H - B - (H - B - 6) * v / maxV).toFixed(1));
      s.append(svg("polyline", {points: pts.join(" ")}));
    } else {
      values.forEach((v, i) => {
        if (v <= 0) return;
        const h = (H - B - 6) * v / maxV;
        const r = svg("rect", {class: "bar" + (opts.dead && opts.dead[i] === v ? " dead" : ""), x: (L + step * i + 1).toFixed(1), y: (H - B - h).toFixed(1), width: Math.max(1, step - 2).toFixed(1), height: h.toFixed(1)});
        r.append(svg("title", {}, v + " job(s), " + (60 - i) + " min ago"));
        s.append(r);
      });
    }
    box.replaceChildren(el("div", {class: "title"}, box.dataset.title), s);
  }
  let chartPending = null;
  function chartSoon() {
    if (chartPending) return;
    chartPending = setTimeout(() => { chartPending = null; drawCharts(); }, 1000);
  }
  async function drawCharts() {
    let t;
    try { t = await getJSON("/api/throughput"); } catch (e) { return; }
    chart(document.getElementById("chart-finished"), t.finished, {fmt: (v) => String(v), dead: t.failed});
    chart(document.getElementById("chart-process"), t.avg_process_ms.map((ms) => ms / 1000), {fmt: (v) => v.toFixed(1) + "s", line: true});
  }
  drawCharts();
  setInterval(drawCharts, 60000);
})();
