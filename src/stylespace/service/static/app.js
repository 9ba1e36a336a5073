// The stylespace page: search by photo or by catalog item, browse article types, compare two items.
// Plain DOM and fetch, no build step, no inline script or style (the page's Content-Security-Policy
// allows neither). Views are picked by the URL hash:
//   #search  #item/<id>  #text/<words>  #browse  #browse/<label>  #compare  #about
// Shoppers see items, ranks and labelled scores; the model id, threshold and confidence figures are
// for staff, on the About view (and /stats).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(4));
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1048576).toFixed(1)} MB`);
const NARROW = window.matchMedia("(max-width: 760px)");
const state = {
  stats: null, classes: null, browse: { label: null, offset: 0 }, compare: { a: null, b: null },
  lastUpload: null, lastText: null, busy: false, searchSeq: 0,
};

// An error the page can explain: a friendly sentence for the shopper, the server's words for the curious.
// The server answers every error as {"error": {code, message, field}}; the page branches on the stable code.
class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(0, "network", `network error: ${error.message}`, null);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* images and empty bodies */ }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "unknown", error.message || `${response.status} ${response.statusText}`,
      response.headers.get("Retry-After"));
  }
  return body;
}

// What the shopper reads for each error code of the API (stylespace.service.errors.CODES).
const FRIENDLY = {
  network: () => "We can't reach the shop's server right now. Please check your connection and try again.",
  upload_too_large: () => {
    const mb = state.stats ? ` of up to ${(state.stats.max_upload_bytes / 1e6).toFixed(0)} MB` : "";
    return `That file is too large. Please choose a smaller photo${mb}.`;
  },
  not_an_image: () => "That file doesn't look like a photo. Please choose a JPEG, PNG or WebP image.",
  image_too_large: () => "That picture is too large for us to look at. A smaller photo, or the same photo saved as JPEG, will work.",
  empty_upload: () => "That file is empty. Please choose another photo.",
  unreadable_image: () => "We couldn't read that picture. It may be damaged; please try another photo.",
  busy: (error) => `We're busy right now. Please try again${error.retryAfter ? ` in ${error.retryAfter} seconds` : " in a moment"}.`,
  unknown_item: (error, what) => `We couldn't find ${what || "that"}. It may no longer be in the catalog.`,
  unknown_label: (error, what) => `We couldn't find ${what || "that"}. It may no longer be in the catalog.`,
  compare_unavailable: () => "Comparing items isn't available on this shop right now.",
};

function friendly(error, what) {
  const say = FRIENDLY[error.code];
  return say ? say(error, what) : "Something went wrong on our side. Please try again.";
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

// A friendly error, with the technical detail behind a toggle.
function showError(element, headline, error, what) {
  setStatus(element, "error", headline, friendly(error, what));
  const more = document.createElement("details");
  more.className = "technical";
  const summary = document.createElement("summary");
  summary.textContent = "Technical detail";
  const code = document.createElement("code");
  code.textContent = `${error.status ? `HTTP ${error.status} ${error.code}: ` : ""}${error.message}`;
  more.append(summary, code);
  element.append(more);
}

// --- cards ------------------------------------------------------------------------------------

function scoreText(score) {
  const euclidean = state.stats && state.stats.metric === "euclidean";
  return euclidean ? { label: `distance ${score.toFixed(2)}`, share: Math.max(0, 1 - score / 2) }
    : { label: `similarity ${Math.round(Math.max(0, score) * 100)}%`, share: Math.max(0, Math.min(1, score)) };
}

function card(item, extra = {}) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  const link = $(".thumb", node);
  link.href = `#item/${encodeURIComponent(item.id)}`;
  link.setAttribute("aria-label", `Find items similar to ${item.name || item.id}`);
  const img = $("img", node);
  img.src = item.image_url;
  img.alt = item.name || `${item.label || "catalog item"} ${item.id}`;
  $(".name", node).textContent = item.name || item.id;
  $(".label", node).textContent = item.label || "";
  if (extra.rank !== undefined) {
    const rank = $(".rank", node);
    rank.hidden = false;
    rank.textContent = `#${extra.rank}`;
    rank.setAttribute("aria-label", `rank ${extra.rank}`);
  }
  if (extra.score !== undefined && extra.score !== null) {
    const { label, share } = scoreText(extra.score);
    const score = $(".score", node);
    score.hidden = false;
    $(".score-text", score).textContent = label;
    $(".fill", score).style.width = `${(100 * share).toFixed(0)}%`;
    score.title = `${label} (${fmt(extra.score)})`;
  }
  if (extra.weak) node.classList.add("weak");
  const compareButton = $(".to-compare", node);
  compareButton.setAttribute("aria-label", `Compare ${item.name || item.id}`);
  compareButton.addEventListener("click", () => pickForCompare(item));
  return node;
}

function skeleton(grid, count) {
  const template = $("#skeleton-template").content.firstElementChild;
  grid.replaceChildren(...Array.from({ length: Math.min(count, 12) }, () => template.cloneNode(true)));
}

// --- search -------------------------------------------------------------------------------------

function showQuery(src, [title, sub], alt) {
  $("#query").hidden = false;
  const image = $("#query-image");
  image.hidden = false;
  image.onerror = () => { image.hidden = true; };  // a file the browser cannot show either: the caption says what it was
  image.src = src;
  image.alt = alt;
  const caption = $("#query-caption");
  caption.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  caption.append(strong, document.createTextNode(sub || ""));
}

function capitalise(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}

// While a search runs: a skeleton grid, a spinner, and a dropzone that takes no second file.
function setBusy(busy) {
  state.busy = busy;
  const zone = $("#dropzone");
  zone.classList.toggle("busy", busy);
  zone.setAttribute("aria-disabled", String(busy));
  $("#file-input").disabled = busy;
  $("#k").disabled = busy;
  $("#text-button").disabled = busy;
  $("#results").setAttribute("aria-busy", String(busy));
  if (busy) {
    setStatus($("#search-status"), "waiting", "Searching…", "Looking for items in the same style.");
    skeleton($("#results"), Number($("#k").value));
  }
}

// Items for words: shown only when confident; otherwise the reason, and no items (never unrelated ones).
// Scores are shown where they are similarities (the text model alone); a fused or keyword rank has no percentage.
function showTextResults(result) {
  const grid = $("#results");
  const status = $("#search-status");
  const cosine = result.score_name === "cosine";
  grid.replaceChildren(...result.results.map((hit) => card(hit, { rank: hit.rank, score: cosine ? hit.score : null })));
  if (result.confident) {
    const unknown = result.unknown_words.length ? ` Not recognised: ${result.unknown_words.join(", ")}.` : "";
    setStatus(status, "good", `${result.results.length} items for “${result.query}”`, `Best match first.${unknown}`);
  } else {
    setStatus(status, "bad", "No confident match", `${capitalise(result.reason)}. Try other words, or a photo.`);
  }
  grid.dataset.query = result.query;
}

function searchText(text) {
  state.lastUpload = null;
  state.lastText = text;
  $("#text-input").value = text;
  $("#query").hidden = true;
  return runSearch(() => api("/search/text", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, k: Number($("#k").value) }),
  }), "Those words could not be searched", null, showTextResults);
}

function showResults(result) {
  const grid = $("#results");
  const status = $("#search-status");
  grid.replaceChildren();
  const render = (weak) => {
    grid.replaceChildren(...result.results.map((hit) => card(hit, { score: hit.score, rank: hit.rank, weak })));
  };
  if (result.confident) {
    setStatus(status, "good", `${result.results.length} similar items`, "Best match first.");
    render(false);
  } else {
    // 004's rule: better no recommendation than an unrelated one, so weak matches stay hidden. The reason
    // says why: the picture is not a product photo (blank, like nothing in the catalog), or no item is close.
    const why = result.not_a_product
      ? `${capitalise(result.reason)}, so it doesn't look like a photo of one product. Try a photo of a single item.`
      : "Nothing in the catalog is close enough to recommend.";
    setStatus(status, "bad", "No confident match", why);
    const reveal = document.createElement("button");
    reveal.type = "button";
    reveal.textContent = "Show the closest items anyway";
    reveal.addEventListener("click", () => { reveal.remove(); render(true); });
    status.append(document.createElement("br"), reveal);
  }
  grid.dataset.query = result.query.id || result.query.filename || "";
}

async function runSearch(request, errorHeadline, what, show = showResults) {
  const seq = ++state.searchSeq;  // a later search wins; an earlier answer arriving late is dropped
  setBusy(true);
  try {
    const result = await request();
    if (seq === state.searchSeq) show(result);
  } catch (error) {
    if (seq === state.searchSeq) {
      $("#results").replaceChildren();
      showError($("#search-status"), errorHeadline, error, what);
    }
  } finally {
    if (seq === state.searchSeq) setBusy(false);
  }
}

function searchUpload(file) {
  if (state.busy) return;
  state.lastUpload = file;
  state.lastText = null;
  if (location.hash !== "#search") history.replaceState(null, "", "#search");
  route(false);
  showQuery(URL.createObjectURL(file), [file.name, `your photo · ${bytes(file.size)}`], `Your photo: ${file.name}`);
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("#k").value);
  return runSearch(() => api("/search", { method: "POST", body: form }), "That photo could not be searched");
}

async function searchItem(id) {
  state.lastUpload = null;
  state.lastText = null;
  return runSearch(async () => {
    const item = await api(`/items/${encodeURIComponent(id)}`);
    showQuery(item.image_url, [item.name || item.id, `${item.label || "no label"} · id ${item.id}`],
      item.name || `catalog item ${item.id}`);
    return api(`/items/${encodeURIComponent(id)}/similar?k=${$("#k").value}`);
  }, "Cannot show similar items", "that item");
}

function wireDropzone(zone, onFile) {
  const input = $("input[type=file]", zone);
  input.addEventListener("change", () => { if (input.files[0]) onFile(input.files[0]); input.value = ""; });
  zone.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && !input.disabled) { event.preventDefault(); input.click(); }
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); if (!input.disabled) zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file && !input.disabled) onFile(file);
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
      if ((c.label || null) === state.browse.label) {
        a.classList.add("active");
        a.setAttribute("aria-current", "true");
      }
      const name = document.createElement("span");
      name.textContent = c.label === null ? "All items" : c.label;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = c.count === null ? "" : c.count.toLocaleString();
      a.append(name, count);
      li.append(a);
      return li;
    }));
  $("#classes-current").textContent = `· ${state.browse.label || "All items"}`;
}

async function browse(label, append = false) {
  if (!append) {
    state.browse = { label, offset: 0 };
    skeleton($("#browse-grid"), 12);
    // On a narrow screen the list of article types folds away once one is picked, so the items show first.
    if (NARROW.matches) $("#classes-box").open = false;
  }
  const params = new URLSearchParams({ offset: state.browse.offset, limit: 60 });
  if (label) params.set("label", label);
  try {
    const page = await api(`/items?${params}`);
    if (!append) $("#browse-grid").replaceChildren();
    $("#browse-grid").append(...page.items.map((item) => card(item)));
    state.browse.offset = page.offset + page.items.length;
    setStatus($("#browse-status"), "", label || "All items",
      `${page.total.toLocaleString()} items · click one to see items in the same style`);
    $("#more").hidden = state.browse.offset >= page.total;
  } catch (error) {
    $("#browse-grid").replaceChildren();
    showError($("#browse-status"), "Cannot list items", error, "that article type");
  }
  loadClasses().catch(() => {});
}

// --- compare ------------------------------------------------------------------------------------

function setSlot(name, choice) {
  state.compare[name] = choice;
  const slot = $(`.slot[data-slot="${name}"]`);
  const img = $("img", slot);
  img.src = choice.src;
  img.alt = `Item ${name.toUpperCase()}: ${choice.caption}`;
  img.hidden = false;
  $(".dropzone-title", slot).hidden = true;
  $(".dropzone-hint", slot).hidden = true;
  $(".caption", slot).textContent = choice.caption;
  $("#compare-button").disabled = !(state.compare.a && state.compare.b);
  $("#verdict").hidden = true;
}

function pickForCompare(item) {
  const name = !state.compare.a ? "a" : "b";
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
  const button = $("#compare-button");
  box.hidden = false;
  box.className = "verdict waiting";
  box.textContent = "Comparing…";
  button.disabled = true;
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
      `cutoff ${fmt(verdict.cutoff)}`;
    box.append(message, numbers);
  } catch (error) {
    showError(box, "Cannot compare these two", error, "one of these items");
    box.className = "verdict bad";
  } finally {
    button.disabled = !(state.compare.a && state.compare.b);
  }
}

// --- about --------------------------------------------------------------------------------------

function renderAbout() {
  const stats = state.stats;
  const list = $("#about-list");
  if (!stats) { list.textContent = "The server has not answered yet."; return; }
  const rows = [
    ["Catalog", `${stats.catalog}: ${stats.items.toLocaleString()} items, ${stats.classes} article types`],
    ["Model", `${stats.model_id} (${stats.embedding_dim} dimensions, ${stats.metric}), run by ${stats.engine}`],
    ["Recommendation threshold", stats.threshold === null ? "not calibrated (every result is shown)"
      : `${fmt(stats.threshold)} on the ${stats.confidence_score} confidence`],
    ["Uploads", `up to ${(stats.max_upload_bytes / 1e6).toFixed(0)} MB and ` +
      `${(stats.decoding.decoded_pixels / 1e6).toFixed(0)} megapixels as decoded`],
    ["Searches answered", `${stats.searches.toLocaleString()} in ${stats.search_batches.toLocaleString()} batches`],
  ];
  if (stats.text_search) {
    const how = stats.text_search.names ? "product names (BM25) fused with the text model" : "the text model";
    rows.push(["Search by words", `${how}; similarity floor ${fmt(stats.text_search.floor)}`]);
  }
  if (stats.compatibility) {
    rows.push(["Compatibility", `${stats.compatibility.backbone}, cutoff ${fmt(stats.compatibility.cutoff)}`]);
  }
  list.replaceChildren(...rows.flatMap(([term, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  }));
}

// --- routing ------------------------------------------------------------------------------------

function route(load = true) {
  const hash = decodeURIComponent(location.hash.slice(1));
  const [view, ...rest] = hash.split("/");
  const arg = rest.join("/");
  const name = ["item", "text"].includes(view) ? "search" : ["browse", "compare", "about"].includes(view) ? view : "search";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    link.classList.toggle("active", link.dataset.view === name);
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!load) return;
  if (view === "item" && arg) searchItem(arg);
  if (view === "text" && arg) searchText(arg);
  if (view === "browse") browse(arg || null);
  if (view === "about") loadStats().then(renderAbout);
}

async function loadStats() {
  try {
    const stats = await api("/stats");
    state.stats = stats;
    $("#stats").textContent = `${stats.items.toLocaleString()} items · ${stats.classes} article types`;
    $("#text-form").hidden = !stats.text_search;  // no text model on this server: no search box
    if (!stats.compatibility) {
      $("#compare-button").title = "No compatibility model is loaded on this server";
    }
  } catch (error) {
    $("#stats").textContent = "The shop's search is starting; please wait a moment.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wireDropzone($("#dropzone"), searchUpload);
  for (const name of ["a", "b"]) {
    const slot = $(`.slot[data-slot="${name}"]`);
    wireDropzone($(".dropzone", slot), (file) =>
      setSlot(name, { file, src: URL.createObjectURL(file), caption: `${file.name} (your photo)` }));
  }
  $("#compare-button").addEventListener("click", compare);
  $("#text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#text-input").value.trim();
    if (!text || state.busy) return;
    const hash = `#text/${encodeURIComponent(text)}`;
    if (location.hash === hash) searchText(text);  // the same words again (e.g. another result count)
    else location.hash = hash;  // routed: the words are in the address, so back and reload work
  });
  $("#more").addEventListener("click", () => browse(state.browse.label, true));
  $("#class-filter").addEventListener("input", () => loadClasses());
  // The result count applies to whatever was searched last: an item, or the photo uploaded.
  $("#k").addEventListener("change", () => {
    if (location.hash.startsWith("#item/") || location.hash.startsWith("#text/")) route();
    else if (state.lastUpload) searchUpload(state.lastUpload);
  });
  window.addEventListener("hashchange", () => route());
  if (NARROW.matches) $("#classes-box").open = false;
  loadStats();
  route();
});
