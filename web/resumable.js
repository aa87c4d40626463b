// resumable.js: the browser client's resumable mode, an ES module with no
// dependencies. It uploads a file with the tus 1.0 protocol to the
// resumable endpoint of upload_progress (the "resumable" block), which
// keeps the bytes on the proxy's disk and, once all are in, delivers the
// file to the backend as one plain request; the last request's answer is
// the backend's. The upload can be paused and resumed, survives a
// dropped connection (it asks the server for its offset and goes on
// from there), and a page reload (the upload URL is kept in
// localStorage; storedUploads lists those not finished, for a page to
// show after a reload). Progress is the server's, polled from the status
// route, except for speed and time left in the first seconds after the
// bytes start flowing again (see measuredSince). With status_access
// token, the creation's answer carries the upload's token
// (X-Upload-Token): it is kept with the URL, shown on every later tus
// request as X-Upload-Token and on the status reads as a bearer token.
//
//	import { uploadResumable } from "/resumable.js";
//	const upload = uploadResumable("/files/", file, { onProgress(p) { ... } });
//	pauseButton.onclick = () => upload.paused ? upload.resume() : upload.pause();
//	cancelButton.onclick = () => upload.cancel();
//	const result = await upload.done; // {id, httpStatus, answer, final}
//
// For more (chunking, Uppy), use tus-js-client against the same
// endpoint (not its parallelUploads: the proxy offers no tus
// concatenation); see docs/resumable.md.

/**
 * What the server reports of an upload (GET <statusPath><id>).
 * @typedef {Object} ResumableProgress
 * @property {string} id
 * @property {string} status "uploading", "paused", "delivering", "complete", "error", "aborted"
 * @property {number} received bytes stored on the proxy
 * @property {number|null} total
 * @property {number|null} percent
 * @property {number} speed bytes per second
 * @property {number} [elapsed] seconds since the upload started (until it ended, once it has)
 * @property {number|null} remaining seconds
 * @property {{offset: number, delivered: number, delivery: string, attempts: number, expires_at: string|null}} [resumable]
 */

/**
 * @typedef {Object} ResumableOptions
 * @property {(p: ResumableProgress) => void} [onProgress]
 * @property {Record<string, string>} [headers] sent with every request (e.g. Authorization)
 * @property {string} [group] sent as X-Upload-Group at creation (see reserveGroup in upload-progress.js)
 * @property {string} [groupToken] the group's token, sent as X-Upload-Group-Token at creation: with status_access token, the upload joins the group only with it
 * @property {string} [statusPath] default "/upload/status/"
 * @property {number} [pollInterval] ms between status polls, default 500
 * @property {number[]} [retryDelays] ms before each retry after a failure; default up to a minute
 * @property {Storage|null} [storage] where upload URLs are kept for resuming; default localStorage
 */

/** An upload failure, with a sentence for people in message. */
export class ResumableError extends Error {
	/**
	 * @param {string} message
	 * @param {number} [httpStatus]
	 * @param {unknown} [answer]
	 */
	constructor(message, httpStatus = 0, answer = undefined) {
		super(message);
		this.name = "ResumableError";
		this.httpStatus = httpStatus;
		this.answer = answer;
	}
}

const defaultRetryDelays = [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000];

/**
 * How far back the server's speed looks (speedWindowSpan in
 * caddyprogress/speed.go): for this long after a pause or a dropped
 * connection, the server's figure still counts the time nothing moved.
 */
const serverSpeedWindow = 3000;
/** The shortest span the client measures a speed over. */
const minSpeedSpan = 500;

/** Final states of an upload's status. */
const finalStates = ["complete", "error", "aborted"];

/**
 * The upload URL and token kept under a storage key: a bare URL, or
 * {url, token} for an upload made with status_access token.
 * @param {string|null} value
 * @returns {{url: string|null, token: string|null}}
 */
function parseStored(value) {
	if (!value?.startsWith("{")) return { url: value, token: null };
	try {
		const { url, token } = JSON.parse(value);
		return { url: typeof url === "string" ? url : null, token: typeof token === "string" ? token : null };
	} catch {
		return { url: null, token: null };
	}
}

/** @param {string|null} token @returns {Record<string, string>} the upload's token on a tus request */
const ownToken = (token) => (token ? { "X-Upload-Token": token } : {});

/** @param {string|null} token @returns {Record<string, string>} the upload's token on a status read */
const bearer = (token) => (token ? { Authorization: "Bearer " + token } : {});

/** @param {string} endpoint */
const keyPrefix = (endpoint) => `upload-progress-tus::${endpoint}::`;

/**
 * The key under which the upload URL of file is kept.
 * @param {string} endpoint
 * @param {{name: string, size: number, lastModified: number}} file
 */
export function storageKey(endpoint, file) {
	return `${keyPrefix(endpoint)}${file.name}::${file.size}::${file.lastModified}`;
}

/**
 * An upload this client started and did not finish (a page reload or a
 * closed tab stopped it), as kept in storage.
 * @typedef {Object} StoredUpload
 * @property {string} key its storage key
 * @property {string} url its upload URL
 * @property {string|null} token its token (status_access token), or null
 * @property {string} id its upload ID
 * @property {string} name the file's name
 * @property {number} size the file's size
 * @property {number} lastModified the file's lastModified
 */

/**
 * The unfinished uploads kept in storage for endpoint; picking one of
 * their files again (same name, size and lastModified) and passing it to
 * uploadResumable resumes it.
 * @param {string} endpoint
 * @param {Storage|null} [storage] default localStorage
 * @returns {StoredUpload[]}
 */
export function storedUploads(endpoint, storage = globalThis.localStorage ?? null) {
	if (!storage) return [];
	const prefix = keyPrefix(endpoint);
	/** @type {StoredUpload[]} */
	const found = [];
	for (let i = 0; i < storage.length; i++) {
		const key = storage.key(i);
		const m = key?.startsWith(prefix) ? /^(.*)::(\d+)::(\d+)$/s.exec(key.slice(prefix.length)) : null;
		const { url, token } = parseStored(m ? storage.getItem(key) : null);
		if (!m || !url) continue;
		found.push({ key, url, token, id: url.slice(url.lastIndexOf("/") + 1), name: m[1], size: Number(m[2]), lastModified: Number(m[3]) });
	}
	return found;
}

/**
 * Where a stored upload stands: its status from the status route, or,
 * when the proxy has no record of it (after a restart), its offset from
 * the upload URL. null when the upload is gone or has ended; it is then
 * removed from storage.
 * @param {StoredUpload} stored
 * @param {{statusPath?: string, headers?: Record<string, string>, storage?: Storage|null}} [options]
 * @returns {Promise<ResumableProgress|null>}
 */
export async function storedProgress(stored, options = {}) {
	const storage = options.storage === undefined ? globalThis.localStorage ?? null : options.storage;
	const res = await fetch((options.statusPath ?? "/upload/status/") + stored.id, { cache: "no-store", headers: { ...options.headers, ...bearer(stored.token) } });
	if (res.ok) {
		const progress = await res.json();
		if (!finalStates.includes(progress.status)) return progress;
	} else {
		const head = await fetch(stored.url, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0", ...(options.headers ?? {}), ...ownToken(stored.token) } });
		if (head.ok) {
			const received = Number(head.headers.get("Upload-Offset"));
			return { id: stored.id, status: "paused", received, total: stored.size, percent: Math.floor((100 * received) / (stored.size || 1)), speed: 0, remaining: null };
		}
	}
	storage?.removeItem(stored.key);
	return null;
}

/**
 * Gives up a stored upload: the proxy deletes its bytes (tus
 * termination), and it leaves storage.
 * @param {StoredUpload} stored
 * @param {{headers?: Record<string, string>, storage?: Storage|null}} [options]
 */
export async function discardStored(stored, options = {}) {
	const storage = options.storage === undefined ? globalThis.localStorage ?? null : options.storage;
	await fetch(stored.url, { method: "DELETE", headers: { "Tus-Resumable": "1.0.0", ...(options.headers ?? {}), ...ownToken(stored.token) } }).catch(() => undefined);
	storage?.removeItem(stored.key);
}

/**
 * Starts a resumable upload of file to endpoint (e.g. "/files/").
 * @param {string} endpoint
 * @param {File} file
 * @param {ResumableOptions} [options]
 */
export function uploadResumable(endpoint, file, options = {}) {
	const statusPath = options.statusPath ?? "/upload/status/";
	const retryDelays = options.retryDelays ?? defaultRetryDelays;
	const storage = options.storage === undefined ? globalThis.localStorage ?? null : options.storage;
	const key = storageKey(endpoint, file);
	const tus = { "Tus-Resumable": "1.0.0", ...(options.headers ?? {}) };

	/** @type {AbortController|null} */
	let inFlight = null;
	/** @type {(() => void)|null} */
	let wake = null;
	let lastProgress = /** @type {ResumableProgress|undefined} */ (undefined);
	let cancelled = false;
	/** @type {string|null} the upload's token (status_access token), from the creation's answer */
	let token = null;
	/**
	 * When the current request started sending, and from which offset:
	 * for serverSpeedWindow after it, the speed is measured from there.
	 * @type {{at: number, received: number}|null}
	 */
	let measuredSince = null;

	const handle = {
		/** @type {string} the upload ID, once created */
		id: "",
		paused: false,
		/** Stops sending; the bytes already sent stay on the proxy. */
		pause() {
			handle.paused = true;
			inFlight?.abort();
		},
		/** Goes on from the bytes the proxy has. */
		resume() {
			handle.paused = false;
			wake?.();
		},
		/** Stops for good: the proxy deletes the bytes (tus termination), and done rejects. */
		cancel() {
			cancelled = true;
			inFlight?.abort();
			wake?.();
		},
		/** @type {Promise<{id: string, httpStatus: number, answer: unknown, final: ResumableProgress|undefined}>} */
		done: /** @type {any} */ (null),
	};

	const untilResumed = () => new Promise((resolve) => { wake = () => { wake = null; resolve(undefined); }; });
	const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

	/** @param {string} method @param {string} url @param {Record<string,string>} headers @param {Blob} [body] */
	async function send(method, url, headers, body) {
		inFlight = new AbortController();
		try {
			const own = method !== "POST" ? ownToken(token) : {};
			return await fetch(url, { method, headers: { ...tus, ...own, ...headers }, body, signal: inFlight.signal });
		} finally {
			inFlight = null;
		}
	}

	async function create() {
		const meta = [["filename", file.name], ["filetype", file.type || "application/octet-stream"]]
			.map(([k, v]) => `${k} ${btoa(unescape(encodeURIComponent(v)))}`).join(",");
		const headers = { "Upload-Length": String(file.size), "Upload-Metadata": meta };
		if (options.group) headers["X-Upload-Group"] = options.group;
		if (options.group && options.groupToken) headers["X-Upload-Group-Token"] = options.groupToken;
		const res = await send("POST", endpoint, headers);
		if (res.status !== 201) throw await failure(res, "The server refused to start the upload");
		const url = new URL(res.headers.get("Location") ?? "", location.href).href;
		token = res.headers.get("X-Upload-Token");
		storage?.setItem(key, token ? JSON.stringify({ url, token }) : url);
		return url;
	}

	/** @param {string} url @returns {Promise<number|null>} the offset, or null when the upload is gone */
	async function offsetOf(url) {
		const res = await send("HEAD", url, {});
		if (res.status === 404 || res.status === 410) return null;
		if (res.status === 423) throw new Retry(Number(res.headers.get("Retry-After") ?? "1") * 1000);
		if (!res.ok) throw new Retry(0);
		return Number(res.headers.get("Upload-Offset"));
	}

	/**
	 * The server's progress, with speed and time left measured by the
	 * client in the first serverSpeedWindow after the bytes started
	 * flowing again, so that a pause or an outage is not counted: from
	 * the bytes received since then over the time since then (0 and
	 * null, unknown, for the first half second).
	 * @param {ResumableProgress} p
	 * @returns {ResumableProgress}
	 */
	function withCurrentSpeed(p) {
		if (p.status !== "uploading" || !measuredSince) return p;
		const span = performance.now() - measuredSince.at;
		if (span >= serverSpeedWindow) return p;
		const speed = span >= minSpeedSpan ? Math.max(0, Math.round((1000 * (p.received - measuredSince.received)) / span)) : 0;
		const remaining = speed > 0 && typeof p.total === "number" ? Math.max(0, p.total - p.received) / speed : null;
		return { ...p, speed, remaining };
	}

	/** @returns {Promise<ResumableProgress|undefined>} */
	async function status() {
		const res = await fetch(statusPath + handle.id, { cache: "no-store", headers: bearer(token) });
		return res.ok ? await res.json() : undefined;
	}

	async function poll() {
		while (handle.id && !stopped) {
			try {
				const progress = await status();
				if (progress && !stopped) { // no report after the end
					lastProgress = withCurrentSpeed(progress);
					options.onProgress?.(lastProgress);
				}
			} catch { /* the next poll tells */ }
			await sleep(options.pollInterval ?? 500);
		}
	}
	let stopped = false;

	/**
	 * The upload's final status (its elapsed, speed, upstream_status are
	 * the server's last word), polled until it is final, for at most 3 s;
	 * the last progress if it does not come.
	 * @returns {Promise<ResumableProgress|undefined>}
	 */
	async function finalStatus() {
		const deadline = performance.now() + 3000;
		for (;;) {
			try {
				const progress = await status();
				if (progress && finalStates.includes(progress.status)) return progress;
			} catch { /* try again */ }
			if (performance.now() >= deadline) return lastProgress;
			await sleep(Math.min(options.pollInterval ?? 500, 100));
		}
	}

	async function run() {
		let url;
		({ url, token } = parseStored(storage?.getItem(key) ?? null));
		let failures = 0;
		let stored = 0; // the offset the proxy last reported
		for (;;) {
			if (handle.paused && !cancelled) await untilResumed();
			if (cancelled) {
				if (url) await send("DELETE", url, {}).catch(() => undefined);
				storage?.removeItem(key);
				throw new ResumableError("The upload was cancelled.");
			}
			try {
				let offset = url ? await offsetOf(url) : null;
				if (offset === null) {
					url = await create();
					offset = 0;
				}
				if (offset > stored) failures = 0; // it moves: count failures anew
				stored = offset;
				if (!handle.id) {
					handle.id = url.slice(url.lastIndexOf("/") + 1);
					poll();
				}
				if (offset === file.size) {
					// complete and delivered (the proxy answers 423 until then)
					return { id: handle.id, httpStatus: 200, answer: undefined };
				}
				measuredSince = { at: performance.now(), received: offset };
				const res = await send("PATCH", url, {
					"Upload-Offset": String(offset),
					"Content-Type": "application/offset+octet-stream",
				}, file.slice(offset));
				if (res.status === 204) continue; // this request ended early; ask where it stands
				if (res.status === 503 || res.status === 423) throw new Retry(Number(res.headers.get("Retry-After") ?? "1") * 1000);
				const answer = await parse(res);
				if (res.ok) return { id: handle.id, httpStatus: res.status, answer };
				throw new ResumableError(`The server did not accept the file (error ${res.status}).`, res.status, answer);
			} catch (err) {
				if (err instanceof ResumableError) throw err;
				if (handle.paused || cancelled) continue; // our own abort
				const wait = err instanceof Retry ? err.wait : retryDelays[Math.min(failures, retryDelays.length - 1)];
				if (++failures > retryDelays.length) throw new ResumableError("The connection to the server keeps failing; try again later.");
				await sleep(wait);
			}
		}
	}

	handle.done = run().then(
		async (result) => {
			stopped = true;
			storage?.removeItem(key);
			return { ...result, final: await finalStatus() };
		},
		(err) => {
			stopped = true;
			throw err;
		},
	);
	return handle;
}

/** A failure worth retrying after wait ms. */
class Retry extends Error {
	/** @param {number} wait */
	constructor(wait) {
		super("retry");
		this.wait = wait;
	}
}

/** @param {Response} res */
async function parse(res) {
	const text = await res.text();
	try {
		return JSON.parse(text);
	} catch {
		return text;
	}
}

/** @param {Response} res @param {string} what */
async function failure(res, what) {
	const answer = await parse(res);
	const detail = typeof answer === "object" && answer && "error" in answer ? `: ${answer.error}` : "";
	return new ResumableError(`${what} (error ${res.status})${detail}.`, res.status, answer);
}
