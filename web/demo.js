// demo.js: the demo page. Picked or dropped files are uploaded through
// the proxy, two at a time, each with its own bar; the overall bar is
// the sum of the per-file progress the server reports. The files picked
// or dropped at once are one group: the page reserves it (POST
// /upload/status/?group) and each upload shows its ID and token.
//
// Query parameters, for trying things out (and for the browser test):
//   ?events=off        poll the status route instead of using EventSource
//   ?transport=websocket
//                      follow progress over the WebSocket route
//   ?target=/upload?status=500
//                      where to send uploads (must start with /upload);
//                      the demo backend takes ?delay=2s and ?status=500
//   ?resumable=on      start with the resumable (tus) switch on
//
// Resumable uploads that a reload (or a closed tab) interrupted are
// listed when the page opens, from the upload URLs web/resumable.js kept
// in localStorage, with their progress from the proxy; picking the same
// file again resumes it (as Uppy's Golden Retriever does).

import { uploadWithProgress, reserveGroup } from "./upload-progress.js";
import { formatBytes, formatSpeed, formatRemaining, formatSeconds } from "./format.js";
import { uploadResumable, storedUploads, storedProgress, discardStored, storageKey } from "./resumable.js";

/** The resumable (tus) endpoint, Caddyfile.example's. */
const resumableEndpoint = "/files/";

/**
 * Uploads at the same time. Each uses two connections (the upload and
 * its event stream), and browsers open at most six per host over HTTP/1.1.
 */
const concurrency = 2;

const params = new URLSearchParams(location.search);
const target = (params.get("target") ?? "").startsWith("/upload") ? params.get("target") : "/upload";
const useEvents = params.get("events") !== "off";
const transport = params.get("transport") === "websocket" ? "websocket" : "events";
/** The resumable switch: uploads go to the tus endpoint (Caddyfile.example's /files/). */
const resumableSwitch = /** @type {HTMLInputElement} */ (document.getElementById("resumable"));
resumableSwitch.checked = params.get("resumable") === "on";

/**
 * One file's upload, as the page shows it.
 * @typedef {Object} Entry
 * @property {File|{name: string, size: number, lastModified: number}} file
 *           (the bare description of a file, for an interrupted upload
 *           listed after a reload, until the file is picked again)
 * @property {HTMLElement} el its list item
 * @property {number} received bytes the server has received
 * @property {number} speed bytes per second, while uploading
 * @property {"waiting"|"uploading"|"processing"|"done"|"failed"|"interrupted"} state
 * @property {Promise<{id: string, token: ?string}>} group its batch's reserved group (X-Upload-Group, X-Upload-Group-Token); none for an interrupted upload, which has its group already
 * @property {AbortController} controller
 * @property {boolean} resumable whether it goes through the resumable endpoint
 * @property {import("./resumable.js").StoredUpload} [stored] the interrupted upload it continues
 */

/** @type {Entry[]} */
const entries = [];
/** @type {Entry[]} */
const queue = [];
let running = 0;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * A list item for file, added to the page and to entries.
 * @param {Entry["file"]} file
 * @param {Entry["group"]} group
 * @returns {Entry}
 */
function newEntry(file, group) {
	const el = /** @type {HTMLElement} */ (/** @type {HTMLTemplateElement} */ ($("upload-template")).content.firstElementChild.cloneNode(true));
	/** @type {Entry} */
	const entry = { file, el, received: 0, speed: 0, state: "waiting", group, controller: new AbortController(), resumable: resumableSwitch.checked };
	el.querySelector(".name").textContent = file.name;
	el.querySelector(".size").textContent = formatBytes(file.size);
	el.querySelector(".cancel").addEventListener("click", () => cancel(entry));
	$("uploads").append(el);
	entries.push(entry);
	$("overall").hidden = false;
	return entry;
}

/** @param {FileList|File[]} files */
function addFiles(files) {
	const group = reserveGroup();
	for (const file of files) {
		// the same file as an interrupted upload: resume that one
		const key = storageKey(resumableEndpoint, file);
		const interrupted = entries.find((e) => e.state === "interrupted" && e.stored?.key === key);
		if (interrupted) {
			interrupted.file = file;
			setState(interrupted, "waiting", "Resuming…");
			queue.push(interrupted);
			continue;
		}
		queue.push(newEntry(file, group));
	}
	updateOverall();
	pump();
}

/**
 * Lists the resumable uploads a reload interrupted, with the progress
 * the proxy has of each; those the proxy no longer has are forgotten.
 */
async function listInterrupted() {
	for (const stored of storedUploads(resumableEndpoint)) {
		let progress = null;
		try {
			progress = await storedProgress(stored);
		} catch {
			continue; // the proxy is not reachable now: keep it for the next visit
		}
		if (!progress || entries.some((e) => e.stored?.key === stored.key || (e.state !== "failed" && storageKey(resumableEndpoint, e.file) === stored.key))) continue;
		const entry = newEntry({ name: stored.name, size: stored.size, lastModified: stored.lastModified }, noGroup());
		entry.stored = stored;
		entry.resumable = true;
		entry.el.dataset.id = stored.id;
		entry.received = progress.received;
		setBar(entry.el.querySelector(".bar"), stored.size > 0 ? (100 * progress.received) / stored.size : 100);
		setState(entry, "interrupted", `Interrupted at ${formatBytes(progress.received)} of ${formatBytes(stored.size)}; pick the file again to resume`);
		updateOverall();
	}
}

/**
 * Cancels an upload: a running one through its signal, a queued one at
 * once, an interrupted one by having the proxy delete its bytes.
 * @param {Entry} entry
 */
function cancel(entry) {
	entry.controller.abort();
	if (entry.state === "interrupted" && entry.stored) {
		discardStored(entry.stored);
		fail(entry, "The upload was cancelled.");
		updateOverall();
		return;
	}
	const i = queue.indexOf(entry);
	if (i >= 0) {
		queue.splice(i, 1);
		fail(entry, "The upload was cancelled.");
		updateOverall();
	}
}

/** Starts queued uploads while fewer than concurrency run. */
function pump() {
	while (running < concurrency && queue.length > 0) {
		const entry = queue.shift();
		running++;
		run(entry).finally(() => {
			running--;
			pump();
		});
	}
}

/** @param {Entry} entry */
async function run(entry) {
	if (entry.controller.signal.aborted) {
		fail(entry, "The upload was cancelled.");
		return;
	}
	setState(entry, "uploading", "Starting…");
	try {
		const group = await entry.group;
		entry.el.dataset.group = group.id; // the group ID (never its token), for curious readers and the tests
		const result = entry.resumable ? await runResumable(entry, group) : await uploadWithProgress(target, /** @type {File} */ (entry.file), {
			signal: entry.controller.signal,
			group: group.id,
			groupToken: group.token ?? undefined,
			useEvents,
			transport,
			onProgress: (p) => showProgress(entry, p),
		});
		entry.received = entry.file.size;
		entry.speed = 0;
		setBar(entry.el.querySelector(".bar"), 100);
		// the time is the server's final word (its elapsed once the upload ended)
		const took = typeof result.final?.elapsed === "number" ? ` in ${formatSeconds(result.final.elapsed)}` : "";
		setState(entry, "done", `Done: ${formatBytes(entry.file.size)}${took}`);
		showAnswer(entry, result);
	} catch (err) {
		fail(entry, err.message);
	}
	updateOverall();
}

/**
 * Uploads with the resumable client; the entry's Pause button pauses and
 * resumes, Cancel ends the upload (the proxy deletes its bytes).
 * @param {Entry} entry
 * @param {{id: string, token: ?string}} group
 */
async function runResumable(entry, group) {
	const upload = uploadResumable(resumableEndpoint, /** @type {File} */ (entry.file), {
		group: group.id || undefined,
		groupToken: group.token ?? undefined,
		onProgress: (p) => {
			if (entry.state !== "done" && entry.state !== "failed") showProgress(entry, p);
		},
	});
	const pause = /** @type {HTMLButtonElement} */ (entry.el.querySelector(".pause"));
	pause.hidden = false;
	pause.onclick = () => {
		if (upload.paused) upload.resume(); else upload.pause();
		pause.textContent = upload.paused ? "Resume" : "Pause";
	};
	entry.controller.signal.addEventListener("abort", () => upload.cancel());
	try {
		return await upload.done;
	} finally {
		pause.hidden = true;
	}
}

/**
 * @param {Entry} entry
 * @param {import("./upload-progress.js").Progress} p
 */
function showProgress(entry, p) {
	entry.el.dataset.id = p.id; // the upload ID, for curious readers and the tests
	entry.received = p.received;
	entry.speed = p.status === "uploading" ? p.speed : 0;
	// the numbers shown, for curious readers and the tests
	entry.el.dataset.received = String(p.received);
	entry.el.dataset.speed = String(entry.speed);
	entry.el.dataset.remaining = p.status === "uploading" && typeof p.remaining === "number" ? String(p.remaining) : "";
	const total = p.total ?? entry.file.size;
	setBar(entry.el.querySelector(".bar"), total > 0 ? (100 * p.received) / total : 100);
	switch (p.status) {
		case "pending":
			setState(entry, "uploading", "Connecting…");
			break;
		case "uploading":
			setState(entry, "uploading", join(
				`${formatBytes(p.received)} of ${formatBytes(total)}`,
				p.speed > 0 ? formatSpeed(p.speed) : "",
				formatRemaining(p.remaining),
			));
			break;
		case "processing":
			setState(entry, "processing", "Processing… all bytes are in; the server is still working on them");
			break;
		case "paused":
			setState(entry, "uploading", `Paused at ${formatBytes(p.received)} of ${formatBytes(total)}; the proxy keeps them`);
			break;
		case "delivering":
			setState(entry, "processing", "Processing… all bytes are stored; the proxy is delivering the file to the backend");
			break;
	}
	updateOverall();
}

/**
 * @param {Entry} entry
 * @param {import("./upload-progress.js").UploadResult} result
 */
function showAnswer(entry, result) {
	const answer = result.answer ?? {};
	const dl = entry.el.querySelector(".answer");
	dl.querySelector(".sha256").textContent = answer.sha256 ?? "(the backend did not say)";
	dl.querySelector(".bytes").textContent = typeof answer.bytes === "number" ? `${answer.bytes.toLocaleString("en")} bytes` : "?";
	dl.querySelector(".id").textContent = result.id;
	/** @type {HTMLElement} */ (dl).hidden = false;
}

/**
 * @param {Entry} entry
 * @param {string} message
 */
function fail(entry, message) {
	entry.speed = 0;
	entry.el.dataset.speed = "0";
	setState(entry, "failed", "Failed.");
	const p = /** @type {HTMLElement} */ (entry.el.querySelector(".error"));
	p.textContent = message;
	p.hidden = false;
}

/**
 * @param {Entry} entry
 * @param {Entry["state"]} state
 * @param {string} detail
 */
function setState(entry, state, detail) {
	entry.state = state;
	entry.el.dataset.state = state;
	entry.el.querySelector(".detail").textContent = detail;
	// processing: all bytes are in and the backend is still at work; the
	// bar shows it moving (demo.css) and says so to screen readers
	const bar = entry.el.querySelector(".bar");
	bar.setAttribute("aria-busy", String(state === "processing"));
	if (state === "processing") bar.setAttribute("aria-valuetext", "processing"); else bar.removeAttribute("aria-valuetext");
	/** @type {HTMLButtonElement} */ (entry.el.querySelector(".cancel")).hidden = state === "done" || state === "failed";
}

/**
 * The overall bar: the sum of what the server received, over the sum of
 * the sizes. Its speed is the sum of the current speeds of the files
 * still uploading (none once all have ended).
 */
function updateOverall() {
	const total = entries.reduce((sum, e) => sum + e.file.size, 0);
	const received = entries.reduce((sum, e) => sum + Math.min(e.received, e.file.size), 0);
	const speed = entries.filter((e) => e.state === "uploading").reduce((sum, e) => sum + e.speed, 0);
	const done = entries.filter((e) => e.state === "done").length;
	const failed = entries.filter((e) => e.state === "failed").length;
	const percent = total > 0 ? (100 * received) / total : 100;

	$("overall").dataset.state = failed > 0 ? "failed" : done === entries.length ? "done" : "uploading";
	setBar($("overall-bar"), percent);
	$("overall-percent").textContent = `${Math.floor(percent)} %`;
	$("overall-title").textContent = `${entries.length} ${entries.length === 1 ? "file" : "files"}, ${formatBytes(total)}`;
	const left = entries.filter((e) => e.state !== "done" && e.state !== "failed")
		.reduce((sum, e) => sum + e.file.size - Math.min(e.received, e.file.size), 0);
	$("overall-detail").textContent = join(
		`${formatBytes(received)} received`,
		speed > 0 ? formatSpeed(speed) : "",
		speed > 0 ? formatRemaining(left / speed) : "",
		`${done} of ${entries.length} done`,
		failed > 0 ? `${failed} failed` : "",
	);
}

/**
 * @param {Element} bar a .bar element
 * @param {number} percent 0 to 100, fractions allowed
 */
function setBar(bar, percent) {
	const p = Math.max(0, Math.min(100, percent));
	bar.setAttribute("aria-valuenow", String(Math.floor(p)));
	/** @type {HTMLElement} */ (bar.querySelector(".fill")).style.width = `${p}%`;
}

/** @param {...string} parts */
function join(...parts) {
	return parts.filter((s) => s !== "").join(" · ");
}

/** The group of an interrupted upload: none to send, as its upload exists. */
const noGroup = () => Promise.resolve({ id: "", token: null });

const input = /** @type {HTMLInputElement} */ ($("files"));
input.addEventListener("change", () => {
	addFiles(Array.from(input.files ?? []));
	input.value = "";
});

const drop = $("drop");
drop.addEventListener("dragover", (ev) => {
	ev.preventDefault();
	drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
	ev.preventDefault();
	drop.classList.remove("over");
	addFiles(Array.from(ev.dataTransfer?.files ?? []));
});

listInterrupted();
