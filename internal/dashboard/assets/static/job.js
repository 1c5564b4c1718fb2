// A job's page: its record and log, kept current while the job runs.
"use strict";

(() => {
  const {el, getJSON, onChange, human} = conveyor;
  const box = document.getElementById("job");
  const id = box.dataset.id;
  const terminal = (s) => s === "succeeded" || s === "dead" || s === "superseded";
  const fmtTime = (t) => t ? t.replace("T", " ").replace(/\.\d+/, "") : "–";
  const fmtMS = (ms) => !ms ? "–" : ms < 1000 ? ms + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms / 1000) + "s";
  let state = box.dataset.state;

  function set(field, text) {
    const e = document.querySelector('[data-f="' + field + '"]');
    if (e) e.textContent = text;
  }

  function render(r) {
    state = r.state;
    box.dataset.state = r.state;
    const st = document.getElementById("job-state");
    st.textContent = r.state;
    st.className = "state st-" + r.state;
    const err = document.getElementById("job-error");
    err.textContent = r.error || "";
    err.hidden = !r.error;
    document.getElementById("retry-form").hidden = !r.can_retry;
    const t = r.timings || {};
    set("size", human(r.size));
    set("attempts", r.attempt + "/" + r.max_attempts);
    set("started", fmtTime(r.started_at));
    set("finished", fmtTime(r.finished_at));
    set("queued", fmtMS(t.queued_ms));
    set("phases", fmtMS(t.fetch_ms) + " · " + fmtMS(t.process_ms) + " · " + fmtMS(t.upload_ms));
    set("total", fmtMS(t.total_ms));
    set("exit", r.exit_code === undefined || r.exit_code === null ? "–" : r.exit_code);
    set("owner", r.owner || "–");
    set("sha", r.input_sha256 || "–");
    const outs = (r.output_links || []).map((o) => el("tr", {},
      el("td", {}, el("a", {href: "/jobs/" + id + "/outputs/" + o.n, download: true}, o.name)),
      el("td", {class: "num"}, human(o.size)),
      el("td", {class: "mono"}, o.sha256)));
    if (outs.length === 0) outs.push(el("tr", {class: "empty"}, el("td", {colspan: 3, class: "muted"}, terminal(r.state) ? "No outputs." : "No outputs yet.")));
    document.getElementById("output-list").replaceChildren(...outs);
    const atts = (r.attempts || []).map((a) => el("tr", {},
      el("td", {}, a.number), el("td", {}, fmtTime(a.started_at)), el("td", {}, fmtTime(a.finished_at)),
      el("td", {}, a.exit_code === undefined || a.exit_code === null ? "–" : a.exit_code), el("td", {}, a.error || "")));
    if (atts.length === 0) atts.push(el("tr", {class: "empty"}, el("td", {colspan: 5, class: "muted"}, "Not started yet.")));
    document.getElementById("attempt-list").replaceChildren(...atts);
  }

  async function reload() {
    try { render(await getJSON("/api/jobs/" + id)); } catch (e) {}
    followLog();
  }

  // ---- the log, followed while the job runs ----
  const log = document.getElementById("log");
  const status = document.getElementById("log-status");
  let offset = 0, reading = false, again = false;
  async function followLog() {
    if (reading) { again = true; return; }
    reading = true;
    try {
      for (;;) {
        const r = await fetch("/jobs/" + id + "/log?offset=" + offset, {credentials: "same-origin"});
        if (!r.ok) break;
        const text = await r.text();
        const next = Number(r.headers.get("X-Log-Next") || offset);
        const size = Number(r.headers.get("X-Log-Size") || 0);
        if (next < offset || size < offset) { log.textContent = ""; offset = 0; continue; } // log replaced
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        if (text) log.append(document.createTextNode(text));
        if (atEnd) log.scrollTop = log.scrollHeight;
        offset = next;
        if (offset >= size) break;
      }
    } finally {
      reading = false;
    }
    status.textContent = terminal(state) ? "" : "following…";
    if (again) { again = false; followLog(); }
  }
  setInterval(() => { if (!terminal(state)) followLog(); }, 1000);

  onChange((ev) => { if (ev.all || ev.ids.includes(id)) reload(); });
  followLog();
})();
