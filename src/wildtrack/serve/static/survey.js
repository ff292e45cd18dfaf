// WildTrack page, "Survey a card" view: drop a zip of the card (or its photos) -> POST surveys -> poll the
// job's progress -> the review cards (photos, top candidates with match pictures, verdict and probability) with
// accept / reject / rename, each written to the survey's decisions.csv -> one Apply button.
// Shares app.js's API helper (window.WildTrack), so the token is asked once per tab for every write.
"use strict";

(() => {
  const { api, send, askToken, tokenHeader, describeError, node, fmt, refreshHealth, dropZone } = window.WildTrack;
  const $ = (id) => document.getElementById(id);
  const el = {
    identifyView: $("identify-view"), surveyView: $("survey-view"), tabIdentify: $("view-identify"),
    tabSurvey: $("view-survey"), dropzone: $("survey-dropzone"), input: $("survey-input"),
    progress: $("survey-progress"), bar: $("survey-bar"), stage: $("survey-stage"), status: $("survey-status"),
    error: $("survey-error"), list: $("survey-list"), review: $("survey-review"), summary: $("survey-summary"),
    policy: $("survey-policy"), encounters: $("encounters"), undecided: $("undecided-count"),
    undecidedWords: $("undecided-words"), apply: $("survey-apply"), report: $("apply-report"),
    identities: $("survey-identities"),
  };
  const POLL_MS = 700;
  let current = null;  // {id, result}
  let polling = null;

  // ------------------------------------------------------------------------------------------ views

  function route() {
    const hash = location.hash.replace(/^#/, "");
    const survey = hash === "survey" || hash.startsWith("survey/");
    el.identifyView.hidden = survey;
    el.surveyView.hidden = !survey;
    el.tabIdentify.toggleAttribute("aria-current", !survey);
    el.tabSurvey.toggleAttribute("aria-current", survey);
    if (survey) {
      el.tabSurvey.setAttribute("aria-current", "page");
      const id = hash.startsWith("survey/") ? decodeURIComponent(hash.slice(7)) : null;
      refreshList();
      if (id && (!current || current.id !== id)) follow(id);
    } else {
      el.tabIdentify.setAttribute("aria-current", "page");
    }
  }

  function showError(message) {
    el.error.textContent = message || "";
    el.error.hidden = !message;
  }

  // ----------------------------------------------------------------------------------------- upload

  async function upload(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    showError("");
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name || "photo.jpg");
    el.progress.hidden = false;
    el.bar.removeAttribute("value");
    const what = files.length === 1 ? files[0].name : `${files.length} files`;
    el.stage.textContent = `Sending ${what}…`;
    el.status.textContent = "";
    try {
      await checkToken();
      const started = await postWithProgress("surveys", form, (sent, total) => {
        el.bar.max = total;
        el.bar.value = sent;
        el.stage.textContent = `Sending ${what}: ${Math.round((100 * sent) / total)} %`;
      });
      const left = started.ignored.length ? ` (${started.ignored.length} other file(s) left out)` : "";
      el.status.textContent = `Survey ${started.id}: ${started.photos} photos received${left}.`;
      current = null;
      location.hash = `survey/${encodeURIComponent(started.id)}`;  // route() follows it
    } catch (err) {
      el.progress.hidden = true;
      showError(err.message);
    }
  }

  // A card can be gigabytes: learn whether the server wants its token from an empty request first (refused
  // before any body is read), rather than from the card's own upload, which would then be sent twice.
  async function checkToken() {
    const probe = await send("surveys", { method: "POST", body: new FormData() });
    if (probe.status === 401 && !askToken()) throw new Error("Starting a survey needs this server's API token.");
  }

  // fetch() cannot report upload progress; XMLHttpRequest can.
  function postWithProgress(path, form, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      const token = tokenHeader();
      if (token) xhr.setRequestHeader("X-API-Token", token);
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new Error(describeError(xhr.status, body)));
      });
      xhr.addEventListener("error", () => reject(new Error("The WildTrack server is not reachable. Is it still running?")));
      xhr.send(form);
    });
  }

  // Poll the job until it is done (then show the review) or failed (then say why).
  function follow(id) {
    clearTimeout(polling);
    current = { id, result: null };
    el.review.hidden = true;
    el.report.hidden = true;
    const tick = async () => {
      if (!current || current.id !== id) return;
      let job;
      try {
        job = await api(`surveys/${encodeURIComponent(id)}`);
      } catch (err) {
        el.progress.hidden = true;
        showError(err.message);
        return;
      }
      if (job.state === "done") {
        el.progress.hidden = true;
        await loadResult(id);
        refreshList();
        return;
      }
      if (job.state === "failed") {
        el.progress.hidden = true;
        showError(`Survey ${id} failed: ${job.error}`);
        refreshList();
        return;
      }
      el.progress.hidden = false;
      const stage = job.stage || (job.state === "queued" ? "waiting to start" : "starting");
      if (job.total) {
        el.bar.max = job.total;
        el.bar.value = Math.min(job.done, job.total);
        el.stage.textContent = `${capital(stage)}: ${job.done} of ${job.total}`;
      } else {
        el.bar.removeAttribute("value");
        el.stage.textContent = `${capital(stage)}…`;
      }
      polling = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  async function refreshList() {
    try {
      const list = await api("surveys");
      el.list.replaceChildren(...list.surveys.map((s) => {
        const li = node("li");
        const a = node("a", "", `${s.id}`);
        a.href = `#survey/${encodeURIComponent(s.id)}`;
        if (current && current.id === s.id) a.setAttribute("aria-current", "true");
        li.append(a, node("span", "muted", ` · ${s.photos} photos · ${s.state}`));
        return li;
      }));
      if (!list.surveys.length) el.list.replaceChildren(node("li", "muted", "none yet"));
    } catch (err) {
      showError(err.message);
    }
  }

  // ----------------------------------------------------------------------------------------- review

  async function loadResult(id) {
    try {
      const result = await api(`surveys/${encodeURIComponent(id)}/result`);
      if (!current || current.id !== id) return;
      current.result = result;
      renderReview(result);
      loadIdentities();
    } catch (err) {
      showError(err.message);
    }
  }

  async function loadIdentities() {
    try {
      const list = await api("identities");
      el.identities.replaceChildren(...list.identities.map((i) => new Option(i.identity)));
    } catch (err) { /* suggestions only */ }
  }

  function renderReview(result) {
    const s = result.survey;
    const c = s.counts || {};
    el.summary.textContent =
      `${c.photos ?? s.photos.length} photos · ${c.encounters ?? s.encounters.length} encounters ` +
      `(${c.confident ?? 0} confident, ${c.review ?? 0} to review, ${c.new_turtles ?? 0} new turtle(s))` +
      (c.unreadable || c.duplicate || c.no_turtle
        ? ` · left out: ${c.unreadable || 0} unreadable, ${c.duplicate || 0} duplicate, ${c.no_turtle || 0} without a turtle`
        : "");
    el.policy.textContent = s.policy && s.policy.sentence ? capital(s.policy.sentence) + "." : "";
    const decisions = new Map(result.decisions.map((d) => [d.encounter, d]));
    const thumbs = new Map(s.photos.map((p) => [p.photo, p.thumb]));
    // Uncertain first (the hardest calls first, as review.html), then the confident ones, folded.
    const rank = new Map((result.review_order || []).map((key, n) => [key, n]));  // review.html's order
    const order = [...s.encounters].sort((a, b) => (rank.get(a.encounter) ?? 0) - (rank.get(b.encounter) ?? 0));
    el.encounters.replaceChildren(...order.map((e) => encounterCard(e, decisions.get(e.encounter), thumbs, result)));
    setUndecided(result.undecided);
    el.review.hidden = false;
    el.report.hidden = !result.applied;
    if (result.applied) {
      el.report.replaceChildren(node("p", "", `Applied before: ${Object.keys(result.applied.encounters || {}).length}` +
                                 " encounter(s) are in the catalogue. Applying again adds only what was decided since."));
    }
  }

  function setUndecided(n) {
    el.undecided.textContent = String(n);
    el.undecidedWords.textContent = n === 1 ? "encounter undecided (left out when applying)"
      : n ? "encounters undecided (left out when applying)" : "undecided: every encounter has a decision";
  }

  function encounterCard(e, decision, thumbs, result) {
    const li = node("li", "encounter-item");
    const details = node("details", `encounter ${e.verdict}`);
    details.dataset.testid = "encounter";
    details.dataset.encounter = e.encounter;
    details.dataset.verdict = e.verdict;
    details.dataset.new = String(Boolean(e.new));
    details.open = e.verdict !== "confident";
    const measure = e.score_kind === "match_probability" ? "P(same)" : "cosine";

    const summary = node("summary");
    const proposal = e.new ? `${e.proposed_identity || "?"} (new turtle)` : (e.proposed_identity || "no proposal");
    const when = e.start ? e.start.replace("T", " ").slice(0, 16) : "time unknown";
    const badge = node("span", `badge ${e.verdict}`, e.verdict === "confident" ? "confident" : "to review");
    const state = node("span", "decision-state");
    state.dataset.testid = "decision-state";
    summary.append(node("strong", "enc-id", e.encounter), node("span", "muted", ` ${when} · ${e.photos.length} photo` +
                   `${e.photos.length === 1 ? "" : "s"} · `), node("span", "proposal", proposal),
                   node("span", "muted", ` ${measure} ${fmt(e.score)} `), badge, state);
    details.append(summary);

    const strip = node("div", "strip");
    for (const photo of e.photos) {
      const thumb = thumbs.get(photo);
      if (!thumb) continue;
      const img = new Image();
      img.src = result.files_url + thumb;
      img.alt = `Survey photo ${photo}`;
      img.loading = "lazy";
      img.title = photo;
      strip.append(img);
    }
    details.append(strip);

    const points = [];
    if (e.threshold != null) points.push(`new turtle below ${measure} ${fmt(e.threshold)}`);
    if (e.confident_threshold != null) points.push(`confident from ${fmt(e.confident_threshold)}`);
    if (points.length) details.append(node("p", "meta", `Operating point: ${points.join(", ")}.`));

    const candidates = node("ol", "candidates");
    candidates.setAttribute("aria-label", `Closest catalogued turtles for ${e.encounter}`);
    for (const [i, cand] of (e.candidates || []).slice(0, 3).entries()) {
      const item = node("li", `candidate ${i === 0 && !e.new ? "lead" : ""}`);
      const words = [`${measure} ${fmt(cand.score)}`];
      if (cand.inliers != null) words.push(`${cand.inliers} matching keypoint${cand.inliers === 1 ? "" : "s"}`);
      if (e.score_kind === "match_probability" && cand.cosine != null) words.push(`cosine ${fmt(cand.cosine)}`);
      item.append(node("div", "who", `#${i + 1} ${cand.identity}`), node("div", "meta", words.join(" · ")));
      if (cand.picture) {
        const img = new Image();
        img.src = result.files_url + cand.picture;
        img.alt = `${e.encounter}'s photo beside ${cand.identity}'s catalogued photo, matching keypoints joined`;
        img.loading = "lazy";
        img.className = "picture";
        item.append(img);
      }
      candidates.append(item);
    }
    if (candidates.children.length) details.append(candidates);

    const group = e.new_group;
    if (group && group.encounters.length > 1) {
      const others = group.encounters.filter((x) => x !== e.encounter);
      const box = node("div", "new-group");
      box.append(node("p", "", `The same new turtle (${group.id}) as in ${others.join(", ")}.`));
      for (const ev of group.evidence || []) {
        if (ev.a !== e.encounter && ev.b !== e.encounter) continue;
        box.append(node("p", "meta", `${ev.a} ↔ ${ev.b}: ${measure} ${fmt(ev.score)}` +
                        (ev.inliers != null ? ` · ${ev.inliers} matching keypoints` : "")));
        if (ev.picture) {
          const img = new Image();
          img.src = result.files_url + ev.picture;
          img.alt = `${ev.a} beside ${ev.b}, matching keypoints joined`;
          img.loading = "lazy";
          img.className = "picture";
          box.append(img);
        }
      }
      details.append(box);
    }

    details.append(controls(e, details, state));
    li.append(details);
    showDecision(details, state, decision);
    return li;
  }

  function controls(e, details, state) {
    const wrap = node("div", "decide");
    const buttons = node("div", "buttons");
    buttons.setAttribute("role", "group");
    buttons.setAttribute("aria-label", `Decision for ${e.encounter}`);
    const accept = node("button", "choice accept", e.proposed_identity ? `Accept ${e.proposed_identity}` : "Accept");
    accept.type = "button";
    accept.dataset.testid = "accept";
    accept.disabled = !e.proposed_identity;
    const reject = node("button", "choice reject", "Reject");
    reject.type = "button";
    reject.dataset.testid = "reject";
    const rename = node("button", "choice rename", "Rename…");
    rename.type = "button";
    rename.dataset.testid = "rename";
    buttons.append(accept, reject, rename);

    // Rename asks for the turtle in a field of the card (never a dialog): suggestions from the catalogue.
    const form = node("form", "rename-form");
    form.hidden = true;
    form.dataset.testid = "rename-form";
    const inputId = `rename-${e.encounter}`;
    const label = node("label", "", `Turtle for ${e.encounter}`);
    label.htmlFor = inputId;
    const input = node("input");
    input.id = inputId;
    input.type = "text";
    input.maxLength = 100;
    input.autocomplete = "off";
    input.setAttribute("list", "survey-identities");
    input.placeholder = "a catalogued turtle, or a new name";
    input.dataset.testid = "rename-input";
    const save = node("button", "primary small", "Save");
    save.type = "submit";
    save.dataset.testid = "rename-save";
    const cancel = node("button", "choice", "Cancel");
    cancel.type = "button";
    form.append(label, node("div", "row", null));
    form.lastChild.append(input, save, cancel);

    accept.addEventListener("click", () => decide(e, "accept", "", details, state));
    reject.addEventListener("click", () => decide(e, "reject", "", details, state));
    rename.addEventListener("click", () => {
      form.hidden = false;
      input.value = details.dataset.final && details.dataset.decision === "rename" ? details.dataset.final : "";
      input.focus();
    });
    cancel.addEventListener("click", () => { form.hidden = true; rename.focus(); });
    form.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.preventDefault(); form.hidden = true; rename.focus(); }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = input.value.trim();
      if (!name) { input.focus(); showError(`Type the turtle's name for ${e.encounter}.`); return; }
      if (await decide(e, "rename", name, details, state)) form.hidden = true;
    });
    wrap.append(buttons, form);
    return wrap;
  }

  async function decide(e, decision, finalIdentity, details, state) {
    if (!current) return false;
    showError("");
    const buttons = details.querySelectorAll(".decide button");
    buttons.forEach((b) => { b.dataset.wasDisabled = String(b.disabled); b.disabled = true; });
    try {
      const answer = await api(`surveys/${encodeURIComponent(current.id)}/decisions`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ encounter: e.encounter, decision, final_identity: finalIdentity }),
      });
      showDecision(details, state, answer.decision);
      setUndecided(answer.undecided);
      return true;
    } catch (err) {
      showError(`${e.encounter}: ${err.message}`);
      return false;
    } finally {
      buttons.forEach((b) => { b.disabled = b.dataset.wasDisabled === "true"; });
    }
  }

  function showDecision(details, state, d) {
    const decision = (d && d.decision) || "";
    details.dataset.decision = decision;
    details.dataset.final = (d && d.final_identity) || "";
    state.className = `decision-state ${decision || "undecided"}`;
    state.textContent = {
      accept: `accepted as ${d && d.final_identity}`, reject: "rejected",
      rename: `renamed to ${d && d.final_identity}`,
    }[decision] || "undecided";
    for (const b of details.querySelectorAll(".decide .choice")) {
      const kind = ["accept", "reject", "rename"].find((k) => b.classList.contains(k));
      if (kind) b.setAttribute("aria-pressed", String(kind === decision));
    }
  }

  // ------------------------------------------------------------------------------------------ apply

  async function applySurvey() {
    if (!current) return;
    showError("");
    el.apply.disabled = true;
    el.report.hidden = false;
    el.report.replaceChildren(node("p", "", "Enrolling the accepted photos…"));
    try {
      const done = await api(`surveys/${encodeURIComponent(current.id)}/apply`, { method: "POST" });
      const lines = done.summary.length ? done.summary : ["applied"];
      const list = node("ul");
      for (const line of lines) list.append(node("li", "", line));
      el.report.replaceChildren(node("p", "ok", `The catalogue now holds ${done.index_count} photos of ` +
                                     `${done.identities_count} individuals.`), list);
      await refreshHealth();
      loadIdentities();
    } catch (err) {
      el.report.hidden = true;
      showError(err.message);
    } finally {
      el.apply.disabled = false;
    }
  }

  const capital = (text) => (text ? text[0].toUpperCase() + text.slice(1) : text);

  // ----------------------------------------------------------------------------------------- wiring

  dropZone(el.dropzone, el.input, upload);
  el.apply.addEventListener("click", applySurvey);
  window.addEventListener("hashchange", route);
  route();
})();
