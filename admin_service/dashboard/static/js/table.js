/* The jobs table: the list endpoint's filters, sorting by the column headers, paging, rows
 * changed in place by live updates and a "new jobs" button.
 *
 * Paging is by keyset cursor: Next asks for the page after the last row shown
 * (pagination.nextCursor), whose cost does not grow with depth as an offset's does; Previous
 * goes back to the cursors kept on the way. `query.page` is the page's number, for display and
 * for the offset request of page 1 or of a link that holds a page number only (after a reload of
 * a deep page, Previous is an offset request too: the cursors before it are not in the link). */

import { api, explain, failed } from "./api.js";
import { openJob } from "./dialog.js";
import { $, el, show } from "./dom.js";
import { compactFormat, fmtNumber, shortId, statusBadge, timeEl } from "./format.js";
import { readView, writeView } from "./view_url.js";

const query = { page: 1, limit: 25, sort_by: "created_at", sort_order: "DESC" };
let filters = {};
let cursor = null; // the cursor the page shown was asked with (null: by page number)
let earlier = []; // the cursors of the pages before it, as Next went (null: by page number)
let nextCursor = null; // the page after the one shown
let listSeq = 0; // the newest list request: answers to older ones are dropped
const visibleJobs = new Map(); // row id -> <tr>
let newJobs = 0;
let signature = ""; // set by the failures panel (filterJobs), shown as a removable chip

function readFilters() {
  return {
    search: $("f-search").value.trim(),
    status: [...$("f-status").selectedOptions].map((option) => option.value).join(","),
    assessment_name: $("f-assessment").value.trim(),
    user_email: $("f-email").value.trim(),
    date_from: $("f-from").value,
    date_to: $("f-to").value,
    signature,
  };
}

/** The filters the table shows now (what a bulk action covers). */
export function currentFilters() {
  return { ...filters };
}

/** What the table shows, without its paging: the export's parameters. */
export function listParams() {
  return { ...filters, sort_by: query.sort_by, sort_order: query.sort_order };
}

/** Filters, sort, page and page size from the address bar (a shared link, a reload). */
function restoreView() {
  const view = readView();
  $("f-search").value = view.search || "";
  const statuses = (view.status || "").split(",");
  for (const option of $("f-status").options) option.selected = statuses.includes(option.value);
  $("f-assessment").value = view.assessment_name || "";
  $("f-email").value = view.user_email || "";
  $("f-from").value = view.date_from || "";
  $("f-to").value = view.date_to || "";
  filters = readFilters();
  query.sort_by = view.sort_by || query.sort_by;
  query.sort_order = view.sort_order || query.sort_order;
  query.limit = Number(view.limit || query.limit);
  query.page = Number(view.page || 1);
  cursor = view.cursor || null;
  earlier = [];
  $("page-size").value = String(query.limit);
}

/** Back to page 1 (a new filter, sort or page size): the cursors kept belong to the old view. */
function firstPage() {
  query.page = 1;
  cursor = null;
  earlier = [];
}

export async function loadJobs() {
  const seq = ++listSeq;
  // The service takes a page number or a cursor, not both; the address bar keeps both.
  const params = cursor ? { ...filters, ...query, page: undefined, cursor } : { ...filters, ...query };
  writeView({ ...params, page: query.page });
  const summary = $("jobs-summary");
  summary.textContent = "Loading jobs…";
  $("jobs-table").setAttribute("aria-busy", "true");
  let data;
  try {
    data = await api("/jobs", params);
  } catch (error) {
    if (seq !== listSeq || failed(error)) return;
    $("jobs-table").removeAttribute("aria-busy");
    if (error.status === 400 && cursor && error.details.some((d) => d.field === "cursor")) {
      cursor = null; // a link's cursor the service does not take (edited, or another sort): by number
      loadJobs();
      return;
    }
    if (error.status === 400 && error.details.length) {
      const box = $("filters-error");
      box.textContent = error.details.map((d) => `${d.field}: ${d.message}`).join(" ");
      show(box, true);
      summary.textContent = "Fix the filters to see jobs.";
    } else {
      summary.textContent = explain(error);
    }
    return;
  }
  if (seq !== listSeq) return; // a newer request has been made
  $("jobs-table").removeAttribute("aria-busy");
  show($("filters-error"), false);
  newJobs = 0;
  show($("jobs-new"), false);
  renderJobs(data);
}

function renderJobs(data) {
  const body = $("jobs-body");
  visibleJobs.clear();
  const rows = data.jobs.map((job) => {
    const row = el(
      "tr",
      { "data-job-id": job.id, "data-status": job.status, role: "row" },
      el("td", { class: "cell-job", role: "cell" }, el("button", { type: "button", class: "link", title: job.job_id, onclick: () => openJob(job.id) }, shortId(job.job_id))),
      el("td", { class: "cell-status", role: "cell" }, statusBadge(job.status)),
      el("td", { class: "cell-assessment", role: "cell", text: job.assessment_name || "—" }),
      el("td", { class: "cell-user", role: "cell", title: job.user ? job.user.email : null, text: job.user ? job.user.email : "(unknown user)" }),
      el("td", { class: "cell-priority col-optional num", role: "cell", text: job.priority ?? "—" }),
      el("td", { class: "cell-created", role: "cell" }, timeEl(job.created_at, compactFormat)),
      el("td", { class: "cell-updated col-optional", role: "cell" }, timeEl(job.updated_at, compactFormat)),
      el("td", { class: "cell-completed col-optional", role: "cell" }, timeEl(job.completed_at, compactFormat)),
    );
    visibleJobs.set(job.id, row);
    return row;
  });
  if (!rows.length) {
    rows.push(el("tr", { role: "row" }, el("td", { colspan: 8, class: "empty", role: "cell", text: "No jobs match these filters." })));
  }
  body.replaceChildren(...rows);
  const p = data.pagination;
  const total = p.total === null || p.total === undefined ? "?" : fmtNumber(p.total);
  const pages = p.totalPages ? fmtNumber(p.totalPages) : "1";
  $("page-info").textContent = `Page ${fmtNumber(p.page || query.page)} of ${pages}`;
  $("jobs-summary").textContent = `${total} ${p.total === 1 ? "job" : "jobs"} · sorted by ${sortDescription()}`;
  $("jobs-summary").dataset.total = p.total ?? "";
  nextCursor = p.nextCursor || null;
  $("page-prev").disabled = query.page <= 1;
  $("page-next").disabled = !p.hasNext || !nextCursor;
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const active = th.dataset.sort === query.sort_by;
    th.setAttribute("aria-sort", active ? (query.sort_order === "ASC" ? "ascending" : "descending") : "none");
  }
}

function sortDescription() {
  const { sort_by: field, sort_order: order } = query;
  const asc = order === "ASC";
  if (field === "status") return `status, ${asc ? "A to Z" : "Z to A"}`;
  if (field === "priority") return `priority, ${asc ? "lowest first" : "highest first"}`;
  return `${field.replace("_at", "").replace("_", " ")} time, ${asc ? "oldest first" : "newest first"}`;
}

/** A live update: the job's row, if shown, changes in place (and flashes). */
export function updateRow(job) {
  const row = visibleJobs.get(job.id);
  if (!row) return;
  row.dataset.status = job.status;
  row.querySelector(".cell-status").replaceChildren(statusBadge(job.status));
  row.querySelector(".cell-updated").replaceChildren(timeEl(job.updated_at, compactFormat));
  row.querySelector(".cell-completed").replaceChildren(timeEl(job.completed_at, compactFormat));
  row.classList.remove("flash");
  void row.offsetWidth; // restart the highlight
  row.classList.add("flash");
}

/** A job was created: count it on the "new jobs" button rather than reshuffling the page. */
export function noteNewJob() {
  newJobs += 1;
  const button = $("jobs-new");
  button.textContent = `${fmtNumber(newJobs)} new ${newJobs === 1 ? "job" : "jobs"} · show`;
  show(button, true);
}

function signatureChip() {
  let chip = $("f-signature");
  if (!signature) {
    if (chip) chip.remove();
    return;
  }
  if (!chip) {
    chip = el("p", { id: "f-signature", class: "filter-chip" });
    $("filters").append(chip);
  }
  const clear = () => {
    signature = "";
    signatureChip();
    applyFilters();
  };
  chip.replaceChildren(
    el("span", { text: "Error signature: " }),
    el("code", { text: signature }),
    el("button", { type: "button", class: "button button-small", "aria-label": "Remove the error signature filter", onclick: clear }, "✕"),
  );
}

/** Show the jobs of a list filter (a failure group's): the form shows it, the signature as a chip. */
export function filterJobs(filter) {
  $("filters").reset();
  $("f-status").value = filter.status || "";
  $("f-assessment").value = filter.assessment_name || "";
  $("f-from").value = filter.date_from || "";
  $("f-to").value = filter.date_to || "";
  signature = filter.signature || "";
  signatureChip();
  applyFilters();
  $("jobs-title").scrollIntoView({ block: "start" });
}

function applyFilters() {
  filters = readFilters();
  firstPage();
  loadJobs();
}

function sortBy(field) {
  if (query.sort_by === field) {
    query.sort_order = query.sort_order === "DESC" ? "ASC" : "DESC";
  } else {
    query.sort_by = field;
    query.sort_order = field === "status" ? "ASC" : "DESC";
  }
  firstPage();
  loadJobs();
}

export function initTable() {
  restoreView();
  $("jobs-new").addEventListener("click", () => {
    firstPage();
    loadJobs();
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("filters").addEventListener("change", (event) => {
    if (event.target.matches("select, input[type=date]")) applyFilters();
  });
  $("filters-clear").addEventListener("click", () => {
    $("filters").reset();
    signature = "";
    signatureChip();
    applyFilters();
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("page-prev").addEventListener("click", () => {
    if (query.page <= 1) return;
    query.page -= 1;
    cursor = earlier.length ? earlier.pop() : null; // none kept (a reloaded deep page): by number
    if (query.page === 1) cursor = null;
    loadJobs();
  });
  $("page-next").addEventListener("click", () => {
    if (!nextCursor) return;
    earlier.push(cursor);
    cursor = nextCursor;
    nextCursor = null; // a second click before the page arrives is not a second page on the same cursor
    query.page += 1;
    loadJobs();
  });
  $("page-size").addEventListener("change", (event) => {
    query.limit = Number(event.target.value);
    firstPage();
    loadJobs();
  });
}
