// upload-progress.js: upload a file through Caddy's upload_progress
// handler and follow the server's own count of the bytes it received.
//
// A dependency-free ES module. Usage:
//
//	import { uploadWithProgress } from "./upload-progress.js";
//
//	const result = await uploadWithProgress("/upload", file, {
//		onProgress: (p) => console.log(p.percent, "%", p.speed, "B/s", p.remaining, "s left"),
//	});
//	console.log(result.answer); // the backend's answer, parsed as JSON
//
// The upload gets an ID (yours, or one reserved with POST <statusPath>),
// is sent with fetch and the X-Upload-ID header, and its progress comes
// from the server: over EventSource (<eventsPath><id>), or a WebSocket
// (<wsPath><id>, with transport: "websocket"), or by polling
// <statusPath><id>. A WebSocket that fails falls back to events, and
// events that fail fall back to polling.
//
// Several files as one group: reserve the group first, then start them
// all at once with its ID and token (with status_access token, an
// upload joins a group only if it shows the group's token):
//
//	const group = await reserveGroup();
//	await Promise.all(files.map((f) => uploadWithProgress("/upload", f, { group: group.id, groupToken: group.token })));

/**
 * The server's view of one upload, as the status route and the events
 * carry it (see the README's "Status" section).
 * @typedef {Object} UploadStatus
 * @property {string} id
 * @property {"pending"|"uploading"|"processing"|"complete"|"error"|"aborted"|"unknown"} status
 * @property {number} [received] bytes the server has read so far
 * @property {?number} [total] the Content-Length, or null
 * @property {?number} [percent] whole percent, or null without a total
 * @property {number} [speed] bytes per second
 * @property {number} [elapsed] seconds since the upload started
 * @property {?number} [remaining] seconds left, or null when unknown
 * @property {?number} [upstream_status] the backend's status code, once known
 * @property {string} [error] what went wrong, for "error" and "aborted"
 * @property {Array<FileStatus>} [files] the parts of a multipart/form-data upload
 */

/**
 * One part of a multipart/form-data upload (see the README's "Files
 * inside multipart uploads").
 * @typedef {Object} FileStatus
 * @property {string} field the form field name
 * @property {?string} filename the file name, or null for a plain field
 * @property {number} received bytes of the part received so far
 * @property {"uploading"|"complete"} status
 */

/**
 * What onProgress receives: the server's count, never the browser's.
 * @typedef {Object} Progress
 * @property {string} id the upload ID
 * @property {string} status "pending", "uploading", "processing", "complete", "error" or "aborted"
 * @property {number} received bytes the server has received
 * @property {?number} total bytes in all, or null when unknown
 * @property {?number} percent 0 to 100 (whole), or null when unknown
 * @property {number} speed bytes per second
 * @property {?number} remaining seconds left, or null when unknown
 * @property {number} elapsed seconds since the upload started
 * @property {?Array<FileStatus>} files each part of a multipart/form-data upload, or null
 * @property {?string} error what went wrong, for "error" and "aborted", else null
 * @property {?number} upstream_status the answer's status code once known, else null
 * @property {"websocket"|"events"|"polling"} via how the progress arrived
 */

/**
 * What the returned promise resolves with.
 * @typedef {Object} UploadResult
 * @property {string} id the upload ID
 * @property {number} httpStatus the status code of the answer
 * @property {*} answer the backend's answer: parsed JSON, or else text
 * @property {?Progress} final the last progress the server reported
 */

/**
 * @typedef {Object} UploadOptions
 * @property {(p: Progress) => void} [onProgress] called with each progress report
 * @property {(r: UploadResult) => void} [onDone] called once with the result
 * @property {(e: UploadError) => void} [onError] called once on failure
 * @property {AbortSignal} [signal] cancels the upload
 * @property {string} [id] an upload ID of your own (1 to 128 of A-Z a-z 0-9 . _ ~ : -); default: reserve one
 * @property {string} [token] the upload's token, with status_access token; default: the reservation's
 * @property {string} [method] default "POST"
 * @property {HeadersInit} [headers] more request headers: a Headers object, an object or [name, value] pairs
 * @property {string} [group] sent as the X-Upload-Group header (see reserveGroup)
 * @property {string} [groupToken] the group's token, sent as X-Upload-Group-Token: with status_access token, an upload joins the group only with it
 * @property {string} [statusPath] default "/upload/status/"
 * @property {string} [eventsPath] default "/upload/events/"
 * @property {string} [wsPath] default "/upload/ws/"
 * @property {"events"|"websocket"|"polling"} [transport] how to follow progress; default "events"
 * @property {string} [idHeader] default "X-Upload-ID"
 * @property {boolean} [useEvents] false to poll even where EventSource exists (as transport: "polling"); default true
 * @property {number} [pollInterval] milliseconds between two polls; default 500
 */

/**
 * An upload failure, with a message meant for people.
 * kind is "network" (the server could not be reached, or the
 * connection broke off), "http" (it answered with an error status), or
 * "cancelled" (the signal aborted).
 */
export class UploadError extends Error {
	/**
	 * @param {"network"|"http"|"cancelled"} kind
	 * @param {string} message
	 * @param {{httpStatus?: number, answer?: *, id?: string, cause?: *}} [details]
	 */
	constructor(kind, message, details = {}) {
		super(message, { cause: details.cause });
		this.name = "UploadError";
		this.kind = kind;
		this.httpStatus = details.httpStatus ?? null;
		this.answer = details.answer ?? null;
		this.id = details.id ?? null;
	}
}

const defaults = {
	method: "POST",
	statusPath: "/upload/status/",
	eventsPath: "/upload/events/",
	wsPath: "/upload/ws/",
	transport: "events",
	idHeader: "X-Upload-ID",
	useEvents: true,
	pollInterval: 500,
};

/** How long to wait, after the answer, for the server's final status. */
const finalWait = 3000;

/**
 * How many connection errors in a row, with no event in between, an
 * event stream may have before the client polls instead. EventSource
 * reconnects by itself after each (the server asks for 1 s), so a
 * stream broken once, e.g. by a server reload, carries on.
 */
const maxStreamErrors = 3;

/** The response header and query parameter of status_access token. */
const tokenHeader = "X-Upload-Token";
const tokenQuery = "token";
/** The headers of a group and of its token. */
const groupHeader = "X-Upload-Group";
const groupTokenHeader = "X-Upload-Group-Token";

/**
 * Uploads body to url and reports the server's progress.
 *
 * The promise resolves with the backend's answer once it is in and below
 * 400, and rejects with an UploadError otherwise (onDone and onError are
 * called as well, for those who prefer callbacks).
 *
 * @param {string} url where to send the upload, e.g. "/upload"
 * @param {Blob|File|ArrayBuffer|Uint8Array|string} body what to send
 * @param {UploadOptions} [options]
 * @returns {Promise<UploadResult>}
 */
export async function uploadWithProgress(url, body, options = {}) {
	const opts = { ...defaults, ...options };
	try {
		const result = await upload(url, body, opts);
		opts.onDone?.(result);
		return result;
	} catch (err) {
		const uerr = asUploadError(err, opts.signal);
		opts.onError?.(uerr);
		throw uerr;
	}
}

/**
 * @param {string} url
 * @param {*} body
 * @param {UploadOptions & typeof defaults} opts
 * @returns {Promise<UploadResult>}
 */
async function upload(url, body, opts) {
	throwIfCancelled(opts.signal);
	const reserved = opts.id === undefined ? await reserveID(opts) : { id: opts.id, token: opts.token ?? null };
	const following = { watcher: watch(reserved.id, reserved.token, opts) };
	try {
		return await send(url, body, reserved, following, opts);
	} catch (err) {
		const uerr = asUploadError(err, opts.signal);
		uerr.id ??= reserved.id;
		throw uerr;
	} finally {
		following.watcher.stop();
	}
}

/**
 * Sends the upload and waits for the answer and the final status.
 * @param {string} url
 * @param {*} body
 * @param {{id: string, token: ?string}} reserved the upload's ID, and its token if known
 * @param {{watcher: ReturnType<typeof watch>}} following the watcher of the upload, replaced if the server names another ID
 * @param {UploadOptions & typeof defaults} opts
 * @returns {Promise<UploadResult>}
 */
async function send(url, body, reserved, following, opts) {
	let id = reserved.id;
	const headers = new Headers(opts.headers ?? {}); // a Headers object, an object or pairs
	headers.set(opts.idHeader, id);
	if (reserved.token) {
		headers.set(tokenHeader, reserved.token); // with status_access token, the server keeps the ID only with it
	}
	if (opts.group) {
		headers.set(groupHeader, opts.group);
		if (opts.groupToken) {
			headers.set(groupTokenHeader, opts.groupToken);
		}
	}
	let response;
	try {
		response = await fetch(url, { method: opts.method, body, headers, signal: opts.signal });
	} catch (err) {
		throwIfCancelled(opts.signal);
		throw new UploadError("network", "The upload did not get through: the server could not be reached, or the connection broke off.", { id, cause: err });
	}
	// The server may have made the ID (client_ids off ignores an ID that
	// is not a reservation), and with status_access token it sends the
	// upload's token: follow the final status with those.
	const answeredID = response.headers.get(opts.idHeader) || id;
	const answeredToken = response.headers.get(tokenHeader);
	if (answeredID !== id) {
		following.watcher.stop();
		following.watcher = watch(answeredID, answeredToken, opts);
		id = answeredID;
	} else if (answeredToken) {
		following.watcher.useToken(answeredToken);
	}
	const answer = await readAnswer(response);
	const final = await following.watcher.settle(finalWait, opts.signal);
	throwIfCancelled(opts.signal);
	if (!response.ok) {
		throw new UploadError("http", httpErrorMessage(response.status, answer), { httpStatus: response.status, answer, id });
	}
	return { id, httpStatus: response.status, answer, final };
}

/**
 * Reserves a fresh ID with POST <statusPath>, and with status_access
 * token gets its token. If that fails for any reason but cancellation,
 * it makes up a random ID instead: the server accepts an ID of the
 * client's choosing (unless client_ids is off: then it makes one, and
 * the client follows that).
 * @param {UploadOptions & typeof defaults} opts
 * @returns {Promise<{id: string, token: ?string}>}
 */
async function reserveID(opts) {
	try {
		const response = await fetch(opts.statusPath, { method: "POST", signal: opts.signal });
		if (response.status === 201) {
			const reserved = await response.json();
			if (typeof reserved.id === "string" && reserved.id !== "") {
				const token = typeof reserved.token === "string" ? reserved.token : response.headers.get(tokenHeader);
				return { id: reserved.id, token: opts.token ?? token };
			}
		}
	} catch (err) {
		throwIfCancelled(opts.signal);
	}
	throwIfCancelled(opts.signal);
	return { id: randomID(), token: opts.token ?? null };
}

/**
 * Reserves a group with POST <statusPath>?group: a fresh group ID and,
 * with status_access token, its token, before any upload, so that
 * several uploads can start at once as members (pass both as the
 * group and groupToken options). If the reservation fails for any
 * reason but cancellation, it makes up a random group ID without a
 * token: the uploads go on (with status_access token, each on its own).
 * @param {{statusPath?: string, signal?: AbortSignal}} [options]
 * @returns {Promise<{id: string, token: ?string}>}
 */
export async function reserveGroup(options = {}) {
	const statusPath = options.statusPath ?? defaults.statusPath;
	try {
		const response = await fetch(statusPath + "?group", { method: "POST", signal: options.signal });
		if (response.status === 201) {
			const reserved = await response.json();
			if (typeof reserved.group === "string" && reserved.group !== "") {
				const token = typeof reserved.token === "string" ? reserved.token : response.headers.get(groupTokenHeader);
				return { id: reserved.group, token: token || null };
			}
		}
	} catch (err) {
		throwIfCancelled(options.signal);
	}
	throwIfCancelled(options.signal);
	return { id: randomID(), token: null };
}

/** @returns {string} 22 random URL-safe characters */
function randomID() {
	const bytes = crypto.getRandomValues(new Uint8Array(16));
	return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Follows an upload's progress, over a WebSocket, EventSource or by
 * polling, and hands each report to onProgress. With a token
 * (status_access token), the WebSocket and the event stream show it as
 * ?token= (neither can set headers) and polls as "Authorization: Bearer".
 * @param {string} id
 * @param {?string} token
 * @param {UploadOptions & typeof defaults} opts
 * @returns {{settle: (ms: number, signal?: AbortSignal) => Promise<?Progress>, useToken: (token: string) => void, stop: () => void}}
 */
function watch(id, token, opts) {
	/** @type {?Progress} */
	let last = null;
	let stopped = false;
	let finalSeen = false;
	/** @type {Array<() => void>} */
	let waiters = [];
	/** @type {?EventSource} */
	let source = null;
	/** @type {?WebSocket} */
	let socket = null;
	/** @type {?ReturnType<typeof setTimeout>} */
	let pollTimer = null;
	/** connection errors of the event stream since its last event */
	let streamErrors = 0;

	/** @param {UploadStatus} s @param {"websocket"|"events"|"polling"} via */
	const report = (s, via) => {
		if (stopped || finalSeen) {
			return;
		}
		if (s.status === "unknown") {
			return; // not started yet (or long gone): nothing to report
		}
		last = toProgress(s, via);
		if (isFinal(s.status)) {
			finalSeen = true;
			closeSource();
			clearTimeout(pollTimer ?? undefined);
		}
		opts.onProgress?.(last);
		if (finalSeen) {
			waiters.forEach((wake) => wake());
			waiters = [];
		}
	};

	const closeSource = () => {
		source?.close();
		source = null;
		const open = socket;
		socket = null; // before close(), so its onclose falls back to nothing
		open?.close();
	};

	const poll = async () => {
		pollTimer = null;
		if (stopped || finalSeen) {
			return;
		}
		const s = await fetchStatus(id, token, opts);
		if (s) {
			report(s, "polling");
		}
		if (!stopped && !finalSeen) {
			pollTimer = setTimeout(poll, opts.pollInterval);
		}
	};

	const startPolling = () => {
		closeSource();
		if (!stopped && !finalSeen && pollTimer === null) {
			poll();
		}
	};

	const startEvents = () => {
		if (stopped || finalSeen) {
			return;
		}
		if (typeof EventSource !== "function") {
			startPolling();
			return;
		}
		let url = opts.eventsPath + encodeURIComponent(id);
		if (token) {
			url += "?" + tokenQuery + "=" + encodeURIComponent(token);
		}
		source = new EventSource(url);
		/** @param {MessageEvent} ev */
		const onEvent = (ev) => {
			streamErrors = 0;
			try {
				report(JSON.parse(ev.data), "events");
			} catch {
				// not JSON: ignore the event
			}
		};
		source.addEventListener("pending", onEvent);
		source.addEventListener("message", onEvent);
		source.addEventListener("complete", onEvent);
		source.addEventListener("aborted", onEvent);
		source.addEventListener("error", (ev) => {
			if (ev instanceof MessageEvent && ev.data) {
				onEvent(ev); // the server's own "event: error"
				if (!finalSeen) {
					startPolling(); // e.g. {"status":"unknown"}: ask again by polling
				}
				return;
			}
			// EventSource's connection error. While it is CONNECTING, the
			// browser reconnects by itself: give a broken stream a few
			// tries. CLOSED means the server refused the stream (an HTTP
			// error, not an event stream): poll at once.
			streamErrors++;
			if (source?.readyState === EventSource.CLOSED || streamErrors >= maxStreamErrors) {
				startPolling();
			}
		});
	};

	// One JSON message per report, {"event": ..., "data": <status>}; the
	// server closes the socket after the final one. A socket that closes
	// before it (refused, or broken) hands over to events.
	const startWebSocket = () => {
		const url = new URL(opts.wsPath + encodeURIComponent(id), location.href);
		url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
		if (token) {
			url.searchParams.set(tokenQuery, token);
		}
		let ws;
		try {
			ws = new WebSocket(url);
		} catch {
			startEvents();
			return;
		}
		socket = ws;
		ws.onmessage = (ev) => {
			let message;
			try {
				message = JSON.parse(ev.data);
			} catch {
				return; // not JSON: ignore the message
			}
			if (typeof message?.data !== "object" || message.data === null) {
				return; // not a progress message: ignore it
			}
			report(message.data, "websocket");
			if (message.event === "error" && !finalSeen) {
				startPolling(); // e.g. {"status":"unknown"}: ask again by polling
			}
		};
		ws.onclose = () => {
			if (socket !== ws) {
				return; // closed by this client, or replaced
			}
			socket = null;
			if (!stopped && !finalSeen && pollTimer === null) {
				startEvents();
			}
		};
	};

	const transport = opts.useEvents === false ? "polling" : opts.transport;
	if (transport === "websocket" && typeof WebSocket === "function") {
		startWebSocket();
	} else if (transport !== "polling") {
		startEvents();
	} else {
		startPolling();
	}

	return {
		/**
		 * Waits up to ms for the final status, or until signal aborts;
		 * then asks once more.
		 * @param {number} ms
		 * @param {AbortSignal} [signal]
		 * @returns {Promise<?Progress>}
		 */
		async settle(ms, signal) {
			if (!finalSeen && !signal?.aborted) {
				await new Promise((resolve) => {
					const wake = () => {
						clearTimeout(timer);
						signal?.removeEventListener("abort", wake);
						resolve(undefined);
					};
					const timer = setTimeout(wake, ms);
					signal?.addEventListener("abort", wake);
					waiters.push(wake);
				});
			}
			if (!finalSeen && !signal?.aborted) {
				const s = await fetchStatus(id, token, opts);
				if (s) {
					report(s, "polling");
				}
			}
			return last;
		},
		/** @param {string} newToken the upload's token, from its response */
		useToken(newToken) {
			token = newToken;
		},
		stop() {
			stopped = true;
			closeSource();
			clearTimeout(pollTimer ?? undefined);
			waiters.forEach((wake) => wake());
			waiters = [];
		},
	};
}

/**
 * Reads <statusPath><id>; null when it cannot be read.
 * @param {string} id
 * @param {?string} token
 * @param {UploadOptions & typeof defaults} opts
 * @returns {Promise<?UploadStatus>}
 */
async function fetchStatus(id, token, opts) {
	try {
		const headers = token ? { Authorization: "Bearer " + token } : {};
		const response = await fetch(opts.statusPath + encodeURIComponent(id), { cache: "no-store", headers });
		if (response.status !== 200 && response.status !== 404) {
			return null;
		}
		return await response.json();
	} catch {
		return null;
	}
}

/**
 * @param {UploadStatus} s
 * @param {"websocket"|"events"|"polling"} via
 * @returns {Progress}
 */
function toProgress(s, via) {
	return {
		id: s.id,
		status: s.status,
		received: s.received ?? 0,
		total: s.total ?? null,
		percent: s.percent ?? null,
		speed: s.speed ?? 0,
		remaining: s.remaining ?? null,
		elapsed: s.elapsed ?? 0,
		files: s.files ?? null,
		error: s.error ?? null,
		upstream_status: s.upstream_status ?? null,
		via,
	};
}

/** @param {string} status */
function isFinal(status) {
	return status === "complete" || status === "error" || status === "aborted";
}

/**
 * The answer's body: parsed JSON if it is JSON, else its text.
 * @param {Response} response
 */
async function readAnswer(response) {
	const text = await response.text();
	try {
		return JSON.parse(text);
	} catch {
		return text;
	}
}

/**
 * Says in plain words why the server refused an upload.
 * @param {number} code
 * @param {*} answer
 * @returns {string}
 */
export function httpErrorMessage(code, answer) {
	const said = typeof answer === "object" && answer !== null && typeof answer.error === "string" ? answer.error : "";
	const because = said ? ` The server said: ${said}` : "";
	switch (true) {
		case code === 400:
			return `The server could not accept this upload (error 400).${because}`;
		case code === 409:
			return `Another upload with the same ID is still in progress (error 409).${because}`;
		case code === 413:
			return `The file is too large for the server (error 413).${because}`;
		case code === 502 || code === 503 || code === 504:
			return `The upload service is not available right now; try again later (error ${code}).${because}`;
		case code >= 500:
			return `The server could not process the upload (error ${code}).${because}`;
		default:
			return `The server refused the upload (error ${code}).${because}`;
	}
}

/** @param {AbortSignal} [signal] */
function throwIfCancelled(signal) {
	if (signal?.aborted) {
		throw new UploadError("cancelled", "The upload was cancelled.");
	}
}

/**
 * @param {*} err
 * @param {AbortSignal} [signal]
 * @returns {UploadError}
 */
function asUploadError(err, signal) {
	if (err instanceof UploadError) {
		return err;
	}
	if (signal?.aborted || err?.name === "AbortError") {
		return new UploadError("cancelled", "The upload was cancelled.", { cause: err });
	}
	return new UploadError("network", `The upload failed: ${err?.message ?? err}`, { cause: err });
}
