/* The jobs table's view (filters, sort, page size, page) kept in the address bar's query, so a
 * view can be shared as a link and a reload restores it. A page reached with Next carries its
 * keyset `cursor` (constant cost at any depth) beside its `page` number (what the table shows);
 * a link with a page number only (typed by hand, older links) opens that page by offset. history.replaceState: changing a
 * filter makes no history entry. Only these keys are read and written; any other query
 * parameter of the page (another panel's) is left as it is. */

const KEYS = ["search", "status", "assessment_name", "user_email", "date_from", "date_to", "sort_by", "sort_order", "page", "cursor", "limit"];
const DEFAULTS = { sort_by: "created_at", sort_order: "DESC", page: "1", limit: "25" };
const SORTS = ["created_at", "updated_at", "completed_at", "status", "priority"];
const LIMITS = ["25", "50", "100"];

/** The view the address bar holds: only well-formed values (a hand-edited link cannot break the page). */
export function readView() {
  const params = new URLSearchParams(window.location.search);
  const view = {};
  for (const key of KEYS) {
    const value = params.get(key);
    if (value !== null && value !== "") view[key] = value.slice(0, key === "cursor" ? 512 : 255);
  }
  if (view.sort_by && !SORTS.includes(view.sort_by)) delete view.sort_by;
  if (view.sort_order) view.sort_order = view.sort_order.toUpperCase();
  if (view.sort_order && !["ASC", "DESC"].includes(view.sort_order)) delete view.sort_order;
  if (view.limit && !LIMITS.includes(view.limit)) delete view.limit;
  if (view.page && !/^[1-9][0-9]{0,6}$/.test(view.page)) delete view.page;
  // A cursor is the service's (base64url); one without its page number is no page we showed.
  if (view.cursor && (!/^[A-Za-z0-9_-]+$/.test(view.cursor) || !view.page || view.page === "1")) delete view.cursor;
  return view;
}

/** Write the view into the address bar (defaults and empty filters left out: short links). */
export function writeView(view) {
  const params = new URLSearchParams(window.location.search);
  for (const key of KEYS) {
    const value = view[key] === undefined || view[key] === null ? "" : String(view[key]);
    if (value === "" || DEFAULTS[key] === value) params.delete(key);
    else params.set(key, value);
  }
  const query = params.toString();
  const url = window.location.pathname + (query ? `?${query}` : "") + window.location.hash;
  if (url !== window.location.pathname + window.location.search + window.location.hash) history.replaceState(history.state, "", url);
}
