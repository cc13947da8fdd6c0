/* The Export button: the jobs the table shows (its filters and sort, every page of them) as a
 * CSV file from GET /admin/jobs/export. Fetched with the session's token in the Authorization
 * header (a link would need the token in the URL, and so in the browser's history), then handed
 * to the browser as a download under the name the service gives it. */

import { API, ApiError, explain, failed } from "./api.js";
import { $ } from "./dom.js";
import { fmtNumber } from "./format.js";
import { currentToken } from "./state.js";

function fileName(response) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : "jobs.csv";
}

async function download(params) {
  const url = new URL(`${API}/jobs/export`, window.location.origin);
  for (const [key, value] of Object.entries({ ...params, format: "csv" })) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${currentToken()}` }, cache: "no-store", credentials: "omit" });
  } catch (_) {
    throw new ApiError(0, "NETWORK", "The service cannot be reached.");
  }
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch (_) {
      error = {};
    }
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || response.statusText, error.details);
  }
  const blob = await response.blob(); // an incomplete download (the stream failed) rejects here
  const name = fileName(response);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return { name, truncated: response.headers.get("X-Export-Truncated") === "true", cap: Number(response.headers.get("X-Export-Max-Rows")) };
}

/** `currentParams` gives the table's filters and sort at the moment of the click. */
export function initExport(currentParams) {
  const button = $("jobs-export");
  const status = $("export-status");
  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "Exporting the jobs these filters match…";
    try {
      const done = await download(currentParams());
      status.textContent = done.truncated
        ? `Downloaded ${done.name}: the first ${fmtNumber(done.cap)} jobs (the export limit); narrow the filters for the rest.`
        : `Downloaded ${done.name}.`;
    } catch (error) {
      if (failed(error)) return;
      status.textContent = error instanceof ApiError ? `Export failed: ${explain(error)}` : "Export failed: the download was interrupted. Try again.";
    } finally {
      button.disabled = false;
    }
  });
}
