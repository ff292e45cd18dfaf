// WildTrack page: pick or drop a photo -> POST predict -> cards (several photos of one sighting ->
// POST identify-encounter); enrol form -> POST enroll.
// Plain browser JavaScript, no build step and no network beyond this server (field laptops are offline).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    dropzone: $("dropzone"), input: $("file-input"), preview: $("preview"), status: $("status"),
    error: $("error"), verdict: $("verdict"), placeholder: $("placeholder"), results: $("results"),
    enrollPanel: $("enroll-panel"), enrollForm: $("enroll-form"), existing: $("enroll-existing"),
    newName: $("enroll-new-name"), newNameField: $("new-name-field"), date: $("enroll-date"),
    enrollSubmit: $("enroll-submit"), enrollStatus: $("enroll-status"), enrollTitle: $("enroll-title"),
    identityCount: $("identity-count"), imageCount: $("image-count"), modelInfo: $("model-info"),
    operatingPoint: $("operating-point"), operatingPointWords: $("operating-point-words"),
    synthetic: $("synthetic-banner"), evidence: $("evidence"), evidenceImage: $("evidence-image"),
    evidenceCaption: $("evidence-caption"), cardsHint: $("cards-hint"),
  };
  let currentFiles = [];
  let previewUrl = null;

  // ------------------------------------------------------------------------------------------ API

  // A server started with --api-token answers 401 to enrolment without it: ask once, keep it for this tab.
  const TOKEN_KEY = "wildtrack-api-token";

  async function api(path, options = {}) {
    let response = await send(path, options);
    if (response.status === 401 && options.method === "POST" && askToken()) {
      response = await send(path, options);
    }
    const type = response.headers.get("content-type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) throw new Error(describeError(response.status, body));
    return body;
  }

  function askToken() {
    const token = window.prompt("This WildTrack server needs its API token to change the catalogue:");
    if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
    return Boolean(token);
  }

  async function send(path, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { ...(options.headers || {}), ...(token ? { "X-API-Token": token } : {}) };
    try {
      return await fetch(path, { ...options, headers });
    } catch (err) {
      throw new Error("The WildTrack server is not reachable. Is it still running?");
    }
  }

  function describeError(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) {  // FastAPI validation errors: [{loc, msg}, ...]
      return detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
    }
    if (typeof detail === "string" && detail) return detail;
    return `The server answered ${status}.`;
  }

  // --------------------------------------------------------------------------------------- status

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = !message;
  }

  function setBusy(busy, message) {
    el.dropzone.classList.toggle("busy", busy);
    el.dropzone.setAttribute("aria-busy", String(busy));
    el.status.textContent = message || "";
  }

  async function refreshHealth() {
    try {
      const h = await api("health");
      el.identityCount.textContent = h.identities_count.toLocaleString();
      el.imageCount.textContent = h.index_count.toLocaleString();
      el.modelInfo.textContent =
        `WildTrack ${h.version} · model ${h.model_fingerprint.slice(0, 12)} (${h.backend}, ${h.dim}-d)`;
      // The one threshold story, in words first, then as the server states it (the same sentence as the demo,
      // index build and report) for whoever wants the numbers.
      el.operatingPointWords.textContent = thresholdInWords(h.operating_point);
      el.operatingPoint.textContent = h.operating_point.sentence.replace(/^n/, "N") + ".";
      el.synthetic.hidden = !h.synthetic;
    } catch (err) {
      showError(err.message);
    }
  }

  // "Below P(same) 0.320, WildTrack says new turtle; on this catalogue that lets about 1 wrong turtle in 20
  // through": the footer's threshold for a biologist, from the rates the catalogue's own fit measured.
  function thresholdInWords(point) {
    if (point.photo_threshold == null) return "WildTrack always names the closest turtle (no new-turtle threshold).";
    const name = point.score === "match_probability" ? "a match probability" : "a similarity";
    let words = `Below ${name} of ${fmt(point.photo_threshold)}, WildTrack says “new turtle”.`;
    const far = point.photo_rates && point.photo_rates.FAR;
    if (far != null) {
      words += far > 0
        ? ` On this catalogue, that lets through about 1 wrong turtle in ${Math.max(1, Math.round(1 / far))}.`
        : " On this catalogue, no wrong turtle got through.";
    }
    return words;
  }

  async function refreshIdentities(selected) {
    const list = await api("identities");
    const keep = selected ?? el.existing.value;
    el.existing.replaceChildren(new Option("+ New individual…", ""));
    for (const item of list.identities) {
      el.existing.add(new Option(`${item.identity} (${item.images} photo${item.images === 1 ? "" : "s"})`,
                                 item.identity));
    }
    el.existing.value = list.identities.some((i) => i.identity === keep) ? keep : "";
    syncNewName();
  }

  function syncNewName() {
    const isNew = el.existing.value === "";
    el.newNameField.hidden = !isNew;
    el.newName.required = isNew;
  }

  // --------------------------------------------------------------------------------------- predict

  // One photo -> /predict; several -> /identify-encounter: photos of one sighting, the most confident decides.
  function choose(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    showError("");
    const notImage = files.find((f) => f.type && !f.type.startsWith("image/"));
    if (notImage) {
      showError(`“${notImage.name}” is not an image.`);
      return;
    }
    currentFiles = files;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(files[0]);
    el.preview.src = previewUrl;
    el.preview.hidden = false;
    el.dropzone.classList.add("has-image");
    el.enrollStatus.textContent = "";
    const these = files.length > 1 ? `these ${files.length} photos` : "this photo";
    el.enrollTitle.textContent = `Add ${these} to the catalogue`;
    el.enrollSubmit.textContent = files.length > 1 ? `Enrol ${files.length} photos` : "Enrol photo";
    predict(files);
  }

  async function predict(files) {
    const encounter = files.length > 1;
    const form = new FormData();
    for (const file of files) form.append(encounter ? "files" : "file", file, file.name || "photo.jpg");
    setBusy(true, encounter ? `Identifying ${files.length} photos of one encounter…` : "Identifying…");
    el.results.replaceChildren();
    el.verdict.hidden = true;
    el.evidence.hidden = true;
    try {
      const result = await api(encounter ? "identify-encounter" : "predict", { method: "POST", body: form });
      if (encounter) {  // evidence for the cards: every photo's matches
        result.matches = result.photos.flatMap((p) => p.matches);
      }
      render(result);
      let what = "the photo";
      if (encounter) {
        const lead = result.candidates[0];
        what = `${files.length} photos of one encounter` +
               (lead ? ` (${lead.support} closest to ${lead.identity})` : "");
      }
      setBusy(false, `Compared ${what} with the catalogue in ${Math.round(result.elapsed_ms)} ms.`);
      if (window.matchMedia("(max-width: 760px)").matches) {  // phones: bring the answer on screen
        el.verdict.scrollIntoView({ behavior: "smooth", block: "start" });
      }
      el.enrollPanel.hidden = false;
      await refreshIdentities(result.identity || "");
    } catch (err) {
      setBusy(false, "");
      el.placeholder.hidden = false;
      el.enrollPanel.hidden = true;
      showError(err.message);
    }
  }

  function render(result) {
    el.placeholder.hidden = true;
    renderVerdict(result);
    const cards = result.candidates.map((c, i) => card(c, i + 1, result));
    el.results.replaceChildren(...cards);
    el.cardsHint.hidden = !cards.length;
  }

  function renderVerdict(result) {
    const known = !result.is_unknown && result.identity != null;
    el.verdict.className = `verdict ${known ? "known" : "unknown"}`;
    el.verdict.dataset.state = known ? "known" : "unknown";
    const icon = node("div", "icon", known ? "✓" : "?");
    const text = node("div", "text");
    const best = result.candidates[0];
    // Re-ranking indexes decide on the calibrated match probability, global ones on the cosine similarity.
    const measure = scoreName(result);
    if (known) {
      text.append(node("div", "label", "Identified as"), node("div", "name", result.identity),
                  node("div", "detail", `${measure} ${fmt(result.score)}` +
                       (result.threshold != null ? ` (threshold ${fmt(result.threshold)})` : "")));
    } else {
      const detail = best
        ? `Closest is ${best.identity} at ${measure} ${fmt(result.score)}, below the threshold ` +
          `${fmt(result.threshold)}.`
        : "The catalogue is empty.";
      text.append(node("div", "label", "No confident match"), node("div", "name", "New individual?"),
                  node("div", "detail", detail));
    }
    text.querySelector(".name").dataset.testid = "verdict-name";
    el.verdict.replaceChildren(icon, text);
    el.verdict.hidden = false;
  }

  // The number a card shows is the one the list is ordered by: P(same) after re-ranking, else the cosine.
  function scoreName(result) {
    return result.score_kind === "match_probability" ? "P(same)" : "cosine";
  }

  function card(candidate, rank, result) {
    const predicted = candidate.identity === result.identity;
    const li = node("li", `card ${predicted ? "predicted" : "other"}`);
    li.dataset.testid = "result-card";
    li.dataset.identity = candidate.identity;
    li.dataset.score = String(candidate.score);
    li.tabIndex = 0;
    li.title = "Show the matching keypoints";
    const img = new Image();
    img.src = candidate.thumbnail_url;
    img.alt = `Closest catalogued photo of ${candidate.identity}`;
    img.loading = "lazy";
    const body = node("div", "body");
    const who = node("div", "who");
    const score = node("span", "score", `${scoreName(result)} ${fmt(candidate.score)}`);
    score.dataset.testid = "card-score";
    who.append(node("strong", "", candidate.identity), score);
    const bar = node("div", "bar");
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(candidate.score));
    bar.setAttribute("aria-label", `${scoreName(result)} for ${candidate.identity}`);
    const fill = node("div", "fill");
    fill.style.width = `${Math.round(Math.max(0, Math.min(1, candidate.score)) * 100)}%`;
    bar.append(fill);
    if (result.threshold != null) {
      const mark = node("div", "threshold");
      mark.style.left = `${Math.max(0, Math.min(1, result.threshold)) * 100}%`;
      mark.title = `new individual below ${scoreName(result)} ${fmt(result.threshold)}`;
      bar.append(mark);
    }
    const support = result.photos
      ? `closest turtle in ${candidate.support} of ${result.photos.length} photos`
      : `${candidate.support} of its photos among the closest in the catalogue`;
    body.append(who, bar, node("div", "meta", support));
    // The evidence beside the score: verified keypoints, and the global search's cosine.
    const parts = [];
    if (candidate.inliers != null) {
      parts.push(`${candidate.inliers} matching keypoint${candidate.inliers === 1 ? "" : "s"}`);
    }
    if (result.score_kind === "match_probability" && candidate.cosine != null) {
      parts.push(`cosine ${fmt(candidate.cosine)}`);
    }
    if (parts.length) {
      const evidence = node("div", "meta evidence", parts.join(" · "));
      evidence.dataset.testid = "evidence";
      body.append(evidence);
    }
    li.append(img, node("span", "rank", `#${rank}`), node("span", "tag", predicted ? "MATCH" : "OTHER"), body);
    li.addEventListener("click", () => showEvidence(candidate, result));
    li.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showEvidence(candidate, result); }
    });
    return li;
  }

  // Click a card: POST the photo again with the card's catalogued image; the server draws the keypoint pairs.
  let evidenceUrl = null;
  async function showEvidence(candidate, result) {
    const photo = result.photos  // an encounter: the photo whose matches hold this image
      ? currentFiles[Math.max(0, result.photos.findIndex(
          (p) => p.matches.some((m) => m.image_id === candidate.best_image_id)))]
      : currentFiles[0];
    if (!photo) return;
    const form = new FormData();
    form.append("file", photo, photo.name || "photo.jpg");
    form.append("image_id", candidate.best_image_id);
    el.evidence.hidden = false;
    el.evidence.setAttribute("aria-busy", "true");
    el.evidenceCaption.textContent = `Matching your photo with ${candidate.identity}…`;
    try {
      const response = await send("match", { method: "POST", body: form });
      if (!response.ok) {
        const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
        throw new Error(describeError(response.status, body));
      }
      const blob = await response.blob();
      if (evidenceUrl) URL.revokeObjectURL(evidenceUrl);
      evidenceUrl = URL.createObjectURL(blob);
      el.evidenceImage.src = evidenceUrl;
      el.evidenceImage.alt = `Your photo beside ${candidate.identity}'s, matching keypoints joined by lines`;
      const n = response.headers.get("X-WildTrack-Inliers");
      el.evidenceCaption.textContent =
        `${candidate.identity}: ${n} keypoint pair${n === "1" ? "" : "s"} agree on one geometric transform. ` +
        "Each line joins the same spot on both photos; many parallel lines on the head's scales mean the same turtle.";
      el.evidence.scrollIntoView({ behavior: "smooth", block: "nearest" });
    } catch (err) {
      el.evidenceCaption.textContent = "";
      el.evidence.hidden = true;
      showError(err.message);
    } finally {
      el.evidence.removeAttribute("aria-busy");
    }
  }

  // ---------------------------------------------------------------------------------------- enrol

  async function enroll(event) {
    event.preventDefault();
    if (!currentFiles.length) return;
    const identity = (el.existing.value || el.newName.value).trim();
    if (!identity) {
      el.newName.focus();
      showError("Type a name for the new individual, or choose an existing one.");
      return;
    }
    showError("");
    const form = new FormData();
    form.append("identity", identity);
    for (const file of currentFiles) form.append("files", file, file.name || "photo.jpg");
    if (el.date.value) form.append("date", el.date.value);
    el.enrollSubmit.disabled = true;
    el.enrollStatus.className = "status";
    el.enrollStatus.textContent = "Enrolling…";
    try {
      const done = await api("enroll", { method: "POST", body: form });
      el.enrollStatus.className = "status ok";
      const known = done.already_enrolled.length
        ? ` (${done.already_enrolled.length} of these photos ${done.already_enrolled.length > 1 ? "were" : "was"} ` +
          "already enrolled)" : "";
      el.enrollStatus.textContent = (done.new_identity
        ? `Created ${done.identity}. The catalogue now has ${done.identities_count} individuals.`
        : `Added to ${done.identity}, who now has ${done.identity_images} photos.`) + known;
      el.newName.value = "";
      el.identityCount.textContent = done.identities_count.toLocaleString();
      el.imageCount.textContent = done.index_count.toLocaleString();
      await refreshIdentities(done.identity);
    } catch (err) {
      el.enrollStatus.textContent = "";
      showError(err.message);
    } finally {
      el.enrollSubmit.disabled = false;
    }
  }

  // -------------------------------------------------------------------------------------- helpers

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text != null) n.textContent = text;  // textContent: identity names are never parsed as HTML
    return n;
  }

  const fmt = (x) => (x == null ? "–" : Number(x).toFixed(3));

  // ---------------------------------------------------------------------------------------- wiring

  // A drop zone and its file input: files chosen, dropped, or picked with Enter/Space go to onFiles.
  function dropZone(zone, input, onFiles) {
    input.addEventListener("change", () => {
      onFiles(input.files);
      input.value = "";  // so choosing the same file again still fires "change"
    });
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      onFiles(e.dataTransfer && e.dataTransfer.files);
    });
  }

  dropZone(el.dropzone, el.input, choose);
  el.preview.addEventListener("error", () => {  // the browser cannot show it either (e.g. not an image)
    el.preview.hidden = true;
    el.dropzone.classList.remove("has-image");
  });
  // A photo dropped next to the zone should not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  el.existing.addEventListener("change", syncNewName);
  el.enrollForm.addEventListener("submit", enroll);

  refreshHealth();
  refreshIdentities().catch((err) => showError(err.message));

  // The survey view (survey.js) shares the API helper (one token prompt for the tab) and the header's counts.
  window.WildTrack = { api, send, askToken, tokenHeader: () => sessionStorage.getItem(TOKEN_KEY), describeError, node,
                       fmt, refreshHealth, dropZone };
})();
