// Shared helpers of the dashboard's pages. Data is only ever put into the
// page with textContent or attributes, never parsed as HTML.
"use strict";

const conveyor = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // el builds an element: el("a", {href: "/x", class: "y"}, "text", child...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function getJSON(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
    return r.json();
  }

  // The live stream: handlers get {ids, all, counts, total, ready}.
  const handlers = [];
  function onChange(fn) { handlers.push(fn); }
  function connect() {
    const live = document.getElementById("live");
    const es = new EventSource("/api/events");
    es.addEventListener("open", () => { live.textContent = "live"; live.classList.remove("off"); });
    es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.add("off"); });
    es.addEventListener("change", (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      for (const fn of handlers) fn(ev);
    });
  }
  document.addEventListener("DOMContentLoaded", connect);

  function human(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
  }

  return {csrf, el, getJSON, onChange, human};
})();
