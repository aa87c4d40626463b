// Package progresscmd adds the `caddy upload-progress` command to a Caddy
// build: `top`, a live view of the uploads a Caddy instance tracks (read
// from its admin API), and `send`, an uploader that shows the proxy's own
// progress of the files it sends. It is separate from the upload_progress
// module, whose package never imports it: a build gets the command, and
// its terminal libraries, only by importing this package as well
// (caddy-build does; with xcaddy, a second --with).
package progresscmd

import (
	"github.com/spf13/cobra"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "upload-progress",
		Usage: "top | send",
		Short: "Shows uploads in flight, or sends files with live progress",
		Long: `
Commands for the upload_progress module.

  top   a live view of the uploads a Caddy instance tracks, from its admin API
  send  uploads files through the proxy, with bars driven by the proxy's progress

Run "caddy upload-progress <command> --help" for each command's flags.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(topCommand(), sendCommand())
		},
	})
}
