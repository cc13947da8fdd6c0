/* The assessment names the filter offers: the names the jobs have (GET /admin/jobs/assessment-names), not a fixed list. */

import { api, failed } from "./api.js";
import { $, el } from "./dom.js";

export async function loadAssessmentNames() {
  let data;
  try {
    data = await api("/jobs/assessment-names");
  } catch (error) {
    failed(error); // the filter still takes any text
    return;
  }
  $("assessment-names").replaceChildren(...data.names.map((name) => el("option", { value: name })));
}
