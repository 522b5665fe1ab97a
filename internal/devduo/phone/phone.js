// Keeps the Duo Mobile stand-in page current: it reads the JSON API every
// second and answers pushes through it. Text goes in with textContent only,
// never as HTML, since pushinfo comes from whoever sent the push.
"use strict";

(function () {
  const api = document.body.dataset.api;
  const decideURL = document.body.dataset.decide;
  const limitsURL = document.body.dataset.limits;
  let last = "";
  let lastLimits = "";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function title(p) {
    return p.type ? p.type + " request" : "Login request";
  }

  function card(p) {
    const pending = p.result === "waiting";
    const a = el("article", "push " + (pending ? "pending" : p.result));
    a.dataset.txid = p.txid;
    a.appendChild(el("h3", "", title(p)));
    const meta = el("p", "meta");
    meta.appendChild(el("span", "user", p.user));
    const created = new Date(p.created);
    const t = el("time", "", created.toLocaleTimeString());
    t.dateTime = p.created;
    meta.appendChild(t);
    if (!pending) meta.appendChild(el("span", "status", p.status));
    a.appendChild(meta);
    const dl = el("dl");
    for (const [k, v] of p.pushinfo_pairs || []) {
      dl.appendChild(el("dt", "", k));
      dl.appendChild(el("dd", "", v));
    }
    a.appendChild(dl);
    if (pending) {
      const f = el("form");
      f.method = "post";
      f.action = decideURL;
      const id = el("input");
      id.type = "hidden";
      id.name = "txid";
      id.value = p.txid;
      f.appendChild(id);
      for (const [value, label] of [["approve", "Approve"], ["deny", "Deny"]]) {
        const b = el("button", value, label);
        b.name = "decision";
        b.value = value;
        f.appendChild(b);
      }
      a.appendChild(f);
    }
    return a;
  }

  function fill(id, pushes, empty) {
    const box = document.getElementById(id);
    box.replaceChildren();
    if (pushes.length === 0) box.appendChild(el("p", "empty", empty));
    for (const p of pushes) box.appendChild(card(p));
  }

  async function refreshLimits() {
    if (!limitsURL) return;
    try {
      const resp = await fetch(limitsURL, { cache: "no-store" });
      if (!resp.ok) return;
      const text = await resp.text();
      if (text === lastLimits) return;
      lastLimits = text;
      const box = document.getElementById("limits");
      box.replaceChildren();
      for (const l of JSON.parse(text) || []) {
        const li = el("li");
        li.appendChild(el("span", "user", l.user));
        li.appendChild(document.createTextNode(": " + l.text));
        box.appendChild(li);
      }
    } catch (e) {
      // Try again on the next tick.
    }
  }

  async function refresh() {
    refreshLimits();
    try {
      const resp = await fetch(api, { cache: "no-store" });
      if (!resp.ok) return;
      const text = await resp.text();
      if (text === last) return; // unchanged: keep the buttons under the pointer
      last = text;
      const pushes = JSON.parse(text);
      fill("pending", pushes.filter((p) => p.result === "waiting"), "No pending requests.");
      fill("decided", pushes.filter((p) => p.result !== "waiting"), "Nothing yet.");
    } catch (e) {
      // The server is restarting or gone; try again on the next tick.
    }
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    const button = ev.submitter;
    if (!button || !form.elements.txid) return;
    ev.preventDefault();
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    const url = api + "/" + encodeURIComponent(form.elements.txid.value) + "/" + button.value;
    try {
      const resp = await fetch(url, { method: "POST" });
      if (!resp.ok && resp.status !== 409) {
        form.appendChild(el("p", "error", "Could not answer: " + resp.status));
      }
    } catch (e) {
      form.appendChild(el("p", "error", "Could not reach the server."));
    }
    last = "";
    refresh();
  });

  refresh();
  setInterval(refresh, 1000);
})();
