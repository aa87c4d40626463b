// Command caddy-build is Caddy with the standard modules plus the
// upload_progress module, its `caddy upload-progress` command (top and
// send) and its demo backend, so that
//
//	go build -o caddy ./caddy-build
//
// gives a caddy binary that understands the upload_progress directive.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	_ "github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progresscmd"
	_ "github.com/caddy-upload-progress/caddy-upload-progress/demobackend"
)

func main() {
	caddycmd.Main()
}
