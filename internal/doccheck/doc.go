// Package doccheck holds tests that keep the documentation honest: every
// Caddyfile snippet in README.md and docs/ is as `caddy fmt` would write
// it, and every whole config among them adapts with this module loaded.
package doccheck
