// format.js: numbers for people (sizes, speeds, durations). Every size,
// speed and duration on the demo page goes through these functions, so
// one value always reads the same way.

const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];

/**
 * n in the largest binary unit that keeps it at least 1, rounded to
 * decimals places; the unit is picked after rounding, so 1023.99 KiB
 * reads "1.0 MiB", never "1024.0 KiB".
 * @param {number} n bytes
 * @param {number} decimals
 * @returns {{value: string, unit: number}}
 */
function scaled(n, decimals) {
	let i = 0;
	while (i < units.length - 1 && Number((n / 1024 ** i).toFixed(decimals)) >= 1024) {
		i++;
	}
	return { value: (n / 1024 ** i).toFixed(decimals), unit: i };
}

/**
 * A byte count with a binary unit: "512 bytes", "1.5 MiB", "20 MiB"
 * (one decimal below 10 of the unit, none from 10 on).
 * @param {number} n
 * @returns {string}
 */
export function formatBytes(n) {
	if (n < 1024) {
		return `${n} ${n === 1 ? "byte" : "bytes"}`;
	}
	let s = scaled(n, 1);
	if (Number(s.value) >= 10) {
		s = scaled(n, 0);
	}
	return `${s.value} ${units[s.unit]}`;
}

/**
 * A speed, always with one decimal: "512.0 bytes/s", "4.8 MiB/s",
 * "10.0 MiB/s". The one speed format of the page.
 * @param {number} bytesPerSecond
 * @returns {string}
 */
export function formatSpeed(bytesPerSecond) {
	const s = scaled(Math.max(0, bytesPerSecond), 1);
	return `${s.value} ${units[s.unit]}/s`;
}

/**
 * Seconds with one decimal: "0.8 s".
 * @param {number} seconds
 * @returns {string}
 */
export function formatSeconds(seconds) {
	return `${seconds.toFixed(1)} s`;
}

/**
 * Time left, rounded up: "3 s left", "2 min 5 s left".
 * @param {?number} seconds
 * @returns {string} "" when unknown
 */
export function formatRemaining(seconds) {
	if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
		return "";
	}
	const s = Math.ceil(seconds);
	if (s < 60) {
		return `${s} s left`;
	}
	const m = Math.floor(s / 60);
	if (m < 60) {
		return `${m} min ${s % 60} s left`;
	}
	return `${Math.floor(m / 60)} h ${m % 60} min left`;
}
