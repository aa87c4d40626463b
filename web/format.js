// format.js: numbers for people (sizes, speeds, durations).

const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];

/**
 * A byte count with a binary unit: "512 bytes", "1.5 MiB".
 * @param {number} n
 * @returns {string}
 */
export function formatBytes(n) {
	let i = 0;
	while (n >= 1024 && i < units.length - 1) {
		n /= 1024;
		i++;
	}
	if (i === 0) {
		return `${n} ${n === 1 ? "byte" : "bytes"}`;
	}
	return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * A speed: "4.8 MiB/s".
 * @param {number} bytesPerSecond
 * @returns {string}
 */
export function formatSpeed(bytesPerSecond) {
	return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/**
 * Time left, rounded up: "3 s left", "2 min 5 s left".
 * @param {?number} seconds
 * @returns {string} "" when unknown
 */
export function formatRemaining(seconds) {
	if (seconds === null || !Number.isFinite(seconds)) {
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
