// The stylespace page: search by photo or by catalog item, browse article types, compare two items.
// Plain DOM and fetch, no build step. Views are picked by the URL hash:
//   #search  #item/<id>  #browse  #browse/<label>  #compare
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(4));
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1048576).toFixed(1)} MB`);
const state = { stats: null, classes: null, browse: { label: null, offset: 0 }, compare: { a: null, b: null } };

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* images and empty bodies */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const message = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ")
      : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function setStatus(element, kind, headline, text) {
  element.className = `status ${kind || ""}`;
  element.replaceChildren();
  if (headline) {
    const strong = document.createElement("span");
    strong.className = "headline";
    strong.textContent = headline;
    element.append(strong);
  }
  if (text) element.append(document.createTextNode(text));
}

// --- cards ------------------------------------------------------------------------------------

function card(item, extra = {}) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  const link = $(".thumb", node);
  link.href = `#item/${encodeURIComponent(item.id)}`;
  const img = $("img", node);
  img.src = item.image_url;
  img.alt = item.name || item.id;
  $(".name", node).textContent = item.name || item.id;
  $(".label", node).textContent = item.label || "";
  if (extra.score !== undefined) {
    $(".score", node).textContent = fmt(extra.score);
    $(".score", node).title = `rank ${extra.rank}, ${state.stats && state.stats.metric === "euclidean" ? "distance" : "cosine similarity"}`;
  }
  if (extra.weak) node.classList.add("weak");
  $(".to-compare", node).addEventListener("click", () => pickForCompare(item));
  return node;
}

// --- search -------------------------------------------------------------------------------------

function showQuery(src, captionHtmlParts) {
  $("#query").hidden = false;
  $("#query-image").src = src;
  const caption = $("#query-caption");
  caption.replaceChildren();
  const [title, sub] = captionHtmlParts;
  const strong = document.createElement("strong");
  strong.textContent = title;
  caption.append(strong, document.createTextNode(sub || ""));
}

function capitalise(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}

function showResults(result) {
  const grid = $("#results");
  const status = $("#search-status");
  grid.replaceChildren();
  const numbers = `confidence ${fmt(result.confidence)} (${result.confidence_score}), ` +
    `threshold ${result.threshold === null ? "not calibrated" : fmt(result.threshold)} · ${result.took_ms.toFixed(0)} ms`;
  const render = (weak) => {
    grid.replaceChildren(...result.results.map((hit) => card(hit, { score: hit.score, rank: hit.rank, weak })));
  };
  if (result.confident) {
    setStatus(status, "good", `${result.results.length} similar items`, numbers);
    render(false);
  } else {
    // 004's rule: better no recommendation than an unrelated one, so weak matches stay hidden. The reason
    // says why: the picture is not a product photo (blank, like nothing in the catalog), or no item is close.
    const why = result.not_a_product
      ? `${capitalise(result.reason)}, so it is not taken for a product photo: ${numbers}.`
      : `Nothing in the catalog is close enough to recommend: ${numbers}.`;
    setStatus(status, "bad", "No confident match", why);
    const reveal = document.createElement("button");
    reveal.textContent = "Show the weak matches anyway";
    reveal.addEventListener("click", () => { reveal.remove(); render(true); });
    status.append(document.createElement("br"), reveal);
  }
  grid.dataset.query = result.query.id || result.query.filename || "";
}

async function searchUpload(file) {
  location.hash = "#search";
  showQuery(URL.createObjectURL(file), [file.name, `your upload · ${bytes(file.size)}`]);
  setStatus($("#search-status"), "", null, "Searching…");
  $("#results").replaceChildren();
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("#k").value);
  try {
    showResults(await api("/search", { method: "POST", body: form }));
  } catch (error) {
    setStatus($("#search-status"), "error", "That image could not be searched", error.message);
  }
}

async function searchItem(id) {
  setStatus($("#search-status"), "", null, "Searching…");
  $("#results").replaceChildren();
  try {
    const item = await api(`/items/${encodeURIComponent(id)}`);
    showQuery(item.image_url, [item.name || item.id, `${item.label || "no label"} · id ${item.id}`]);
    showResults(await api(`/items/${encodeURIComponent(id)}/similar?k=${$("#k").value}`));
  } catch (error) {
    setStatus($("#search-status"), "error", "Cannot show similar items", error.message);
  }
}

function wireDropzone(zone, onFile) {
  const input = $("input[type=file]", zone);
  input.addEventListener("change", () => { if (input.files[0]) onFile(input.files[0]); input.value = ""; });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") input.click(); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) onFile(file);
  });
}

// --- browse -------------------------------------------------------------------------------------

async function loadClasses() {
  if (!state.classes) state.classes = await api("/classes");
  const filter = $("#class-filter").value.trim().toLowerCase();
  const list = $("#classes");
  const entries = [{ label: null, count: state.stats ? state.stats.items : null }, ...state.classes];
  list.replaceChildren(...entries
    .filter((c) => !filter || (c.label || "all items").toLowerCase().includes(filter))
    .map((c) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = c.label === null ? "#browse" : `#browse/${encodeURIComponent(c.label)}`;
      a.dataset.label = c.label === null ? "" : c.label;
      if ((c.label || null) === state.browse.label) a.classList.add("active");
      const name = document.createElement("span");
      name.textContent = c.label === null ? "All items" : c.label;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = c.count === null ? "" : c.count.toLocaleString();
      a.append(name, count);
      li.append(a);
      return li;
    }));
}

async function browse(label, append = false) {
  if (!append) {
    state.browse = { label, offset: 0 };
    $("#browse-grid").replaceChildren();
  }
  const params = new URLSearchParams({ offset: state.browse.offset, limit: 60 });
  if (label) params.set("label", label);
  try {
    const page = await api(`/items?${params}`);
    $("#browse-grid").append(...page.items.map((item) => card(item)));
    state.browse.offset = page.offset + page.items.length;
    setStatus($("#browse-status"), "", label || "All items",
      `${page.total.toLocaleString()} items · click one to see items in the same style`);
    $("#more").hidden = state.browse.offset >= page.total;
  } catch (error) {
    setStatus($("#browse-status"), "error", "Cannot list items", error.message);
  }
  loadClasses().catch(() => {});
}

// --- compare ------------------------------------------------------------------------------------

function setSlot(name, choice) {
  state.compare[name] = choice;
  const slot = $(`.slot[data-slot="${name}"]`);
  const img = $("img", slot);
  img.src = choice.src;
  img.hidden = false;
  $(".dropzone-title", slot).hidden = true;
  $(".dropzone-hint", slot).hidden = true;
  $(".caption", slot).textContent = choice.caption;
  $("#compare-button").disabled = !(state.compare.a && state.compare.b);
  $("#verdict").hidden = true;
}

function pickForCompare(item) {
  const name = !state.compare.a ? "a" : !state.compare.b ? "b" : "b";
  setSlot(name, { id: item.id, src: item.image_url, caption: `${item.name || item.id} (${item.label || "?"})` });
  location.hash = "#compare";
}

async function compare() {
  const form = new FormData();
  for (const name of ["a", "b"]) {
    const choice = state.compare[name];
    if (choice.file) form.append(`image_${name}`, choice.file);
    else form.append(`id_${name}`, choice.id);
  }
  const box = $("#verdict");
  box.hidden = false;
  box.className = "verdict";
  box.textContent = "Comparing…";
  try {
    const verdict = await api("/compare", { method: "POST", body: form });
    box.className = `verdict ${verdict.compatible ? "good" : "bad"}`;
    box.replaceChildren();
    const message = document.createElement("div");
    message.className = "message";
    message.textContent = verdict.message;
    const numbers = document.createElement("div");
    numbers.className = "numbers";
    numbers.textContent = `style distance ${fmt(verdict.distance)} ${verdict.compatible ? "≤" : ">"} ` +
      `cutoff ${fmt(verdict.cutoff)} (${verdict.cutoff_method})`;
    box.append(message, numbers);
  } catch (error) {
    box.className = "verdict bad";
    box.textContent = error.message;
  }
}

// --- routing ------------------------------------------------------------------------------------

function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  const [view, ...rest] = hash.split("/");
  const arg = rest.join("/");
  const name = view === "item" ? "search" : ["browse", "compare"].includes(view) ? view : "search";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  if (view === "item" && arg) searchItem(arg);
  if (view === "browse") browse(arg || null);
}

async function loadStats() {
  try {
    const stats = await api("/stats");
    state.stats = stats;
    const threshold = stats.threshold === null ? "no calibrated threshold" : `threshold ${fmt(stats.threshold)}`;
    $("#stats").textContent = `${stats.items.toLocaleString()} items · ${stats.classes} article types · ` +
      `model ${stats.model_id} · ${threshold}`;
    if (!stats.compatibility) {
      $("#compare-button").title = "No compatibility model is loaded on this server";
    }
  } catch (error) {
    $("#stats").textContent = `server not ready: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wireDropzone($("#dropzone"), searchUpload);
  for (const name of ["a", "b"]) {
    const slot = $(`.slot[data-slot="${name}"]`);
    wireDropzone($(".dropzone", slot), (file) =>
      setSlot(name, { file, src: URL.createObjectURL(file), caption: `${file.name} (upload)` }));
  }
  $("#compare-button").addEventListener("click", compare);
  $("#more").addEventListener("click", () => browse(state.browse.label, true));
  $("#class-filter").addEventListener("input", () => loadClasses());
  $("#k").addEventListener("change", () => { if (location.hash.startsWith("#item/")) route(); });
  window.addEventListener("hashchange", route);
  loadStats();
  route();
});
