package caddyprogress

import (
	"math"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("upload_progress", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("upload_progress", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	upload_progress [<matcher>] {
//		tracker     <name>       # default "default"
//		methods     <method...>  # default POST PUT PATCH
//		id_header   <field>      # default X-Upload-ID
//		id_query    <param>      # default X-Progress-ID
//		status_path <prefix>     # or off; default /upload/status/
//		events_path <prefix>     # or off; default /upload/events/
//		ws_path     <prefix>     # WebSocket progress, or off; default /upload/ws/
//		ws_origins  <pattern...> # other origins whose pages may open the WebSocket, e.g. *.example.com; default none
//		interval    <duration>   # default 100ms
//		retain      <duration>   # default 5m
//		wait        <duration>   # default 60s
//		max_uploads <n>          # default 100000
//		max_memory  <size>       # memory one tracker makes the process hold, GC headroom included (it keeps half by default), e.g. 64MiB or 1GiB; default 64MiB
//		max_group_uploads <n>    # uploads in one group; default 1000
//		max_reservations  <n>    # reserved IDs at once; default a tenth of max_uploads
//		max_subscribers   <n>    # event streams and WebSockets of the tracker at once; default 10000
//		max_subscribers_per_upload <n> # event streams and WebSockets of one upload or group; default 100
//		rate_limit       <size>  # bytes per second for each upload, e.g. 1MiB or 500KB; default none
//		rate_limit_total <size>  # bytes per second for all uploads of this tracker together; default none
//		burst            <size>  # token bucket size; default a tenth of a second at the rate, at least 32KiB
//		nginx_report_path <path> # nginx upload progress format; default off
//		status_access id | token # who may read progress: anyone with the ID, or only with its token; default id
//		token_secret  <secret>   # HMAC secret of the tokens, placeholders allowed; default generated, kept in storage
//		token_cookie  <name>     # a cookie that may carry the token; default none
//		client_ids    on | off   # off: ignore client-supplied IDs, except live reservations; default on
//		redis         <url>      # share the tracker with other instances through Redis, placeholders allowed; default none
//		resumable <path> {       # resumable (tus) uploads at <path>, delivered as one request; default off
//			dir             <folder>   # default: Caddy's data dir + /upload_progress/<tracker>
//			s3              s3://<bucket>[/<prefix>] {  # the uploads in an S3 bucket instead of dir; credentials from the AWS environment
//				endpoint   <url>       # an S3-compatible service; default AWS S3
//				region     <region>    # default AWS_REGION, else us-east-1
//				path_style             # <endpoint>/<bucket> addressing; default off
//			}
//			max_size        <size>     # default 10GiB; 413 beyond
//			max_disk        <size>     # all stored uploads together, counted as bytes are written; 507 beyond; default no limit
//			expire          <duration> # an upload without a byte this long is removed; default 24h
//			reserve_for     <duration> # how long an idle upload keeps max_disk room for bytes not sent yet; default 5m
//			deliver_to      <path>     # required: where the whole upload is delivered
//			deliver_method  <method>   # default POST
//			deliver_as      raw | multipart [<field>]  # default raw; the field defaults to "file"
//			deliver_retries <n>        # retries of a transient delivery failure; default 5
//			ietf_draft                 # also accept the IETF resumable uploads draft; default off
//			cors_origins    <origin...> | *  # pages of these origins may upload from a browser (CORS); default none
//		}
//	}
//
// status_path, events_path and ws_path take "off" to turn that route off.
// Every subdirective is optional; "upload_progress" alone uses the defaults.
// Handlers that name one tracker must agree on its tracker-wide settings
// (redis, status_access, token_secret, client_ids, retain, max_uploads,
// max_memory, max_reservations, max_group_uploads, max_subscribers,
// max_subscribers_per_upload, rate_limit_total, burst, and with redis
// interval): a difference is a config error (trackersettings.go).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "tracker":
			if err := oneArg(d, &h.Tracker); err != nil {
				return err
			}
		case "methods":
			h.Methods = d.RemainingArgs()
			if len(h.Methods) == 0 {
				return d.ArgErr()
			}
		case "id_header":
			if err := oneArg(d, &h.IDHeader); err != nil {
				return err
			}
		case "id_query":
			if err := oneArg(d, &h.IDQuery); err != nil {
				return err
			}
		case "status_path":
			if err := oneArg(d, &h.StatusPath); err != nil {
				return err
			}
		case "events_path":
			if err := oneArg(d, &h.EventsPath); err != nil {
				return err
			}
		case "ws_path":
			if err := oneArg(d, &h.WSPath); err != nil {
				return err
			}
		case "ws_origins":
			h.WSOrigins = d.RemainingArgs()
			if len(h.WSOrigins) == 0 {
				return d.ArgErr()
			}
		case "interval":
			if err := durationArg(d, &h.Interval); err != nil {
				return err
			}
		case "retain":
			if err := durationArg(d, &h.Retain); err != nil {
				return err
			}
		case "wait":
			if err := durationArg(d, &h.Wait); err != nil {
				return err
			}
		case "max_uploads":
			if err := countArg(d, &h.MaxUploads); err != nil {
				return err
			}
		case "max_memory":
			if err := sizeArgUpTo(d, &h.MaxMemory, 1<<50, "1PiB"); err != nil {
				return err
			}
		case "max_group_uploads":
			if err := countArg(d, &h.MaxGroupUploads); err != nil {
				return err
			}
		case "max_reservations":
			if err := countArg(d, &h.MaxReservations); err != nil {
				return err
			}
		case "max_subscribers":
			if err := countArg(d, &h.MaxSubscribers); err != nil {
				return err
			}
		case "max_subscribers_per_upload":
			if err := countArg(d, &h.MaxSubscribersPerUpload); err != nil {
				return err
			}
		case "rate_limit":
			if err := sizeArg(d, &h.RateLimit); err != nil {
				return err
			}
		case "rate_limit_total":
			if err := sizeArg(d, &h.RateLimitTotal); err != nil {
				return err
			}
		case "burst":
			if err := sizeArg(d, &h.Burst); err != nil {
				return err
			}
		case "nginx_report_path":
			if err := oneArg(d, &h.NginxReportPath); err != nil {
				return err
			}
		case "status_access":
			if err := oneArg(d, &h.StatusAccess); err != nil {
				return err
			}
		case "token_secret":
			if err := oneArg(d, &h.TokenSecret); err != nil {
				return err
			}
		case "token_cookie":
			if err := oneArg(d, &h.TokenCookie); err != nil {
				return err
			}
		case "redis":
			if err := oneArg(d, &h.Redis); err != nil {
				return err
			}
		case "client_ids":
			var arg string
			if err := oneArg(d, &arg); err != nil {
				return err
			}
			switch arg {
			case "on", "off":
				on := arg == "on"
				h.ClientIDs = &on
			default:
				return d.Errf("client_ids: %q must be on or off", arg)
			}
		case "resumable":
			h.Resumable = new(resumable.Config)
			if err := h.Resumable.UnmarshalCaddyfile(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized upload_progress subdirective %q", d.Val())
		}
	}
	return nil
}

// oneArg reads exactly one argument of the current subdirective into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: expected one argument", name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: expected one argument, got more", name)
	}
	return nil
}

// countArg reads one whole number of at least 1 into dst.
func countArg(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var arg string
	if err := oneArg(d, &arg); err != nil {
		return err
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		return d.Errf("%s: %q is not a whole number of at least 1", name, arg)
	}
	*dst = n
	return nil
}

// durationArg reads one positive duration argument into dst.
func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var arg string
	if err := oneArg(d, &arg); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(arg)
	if err != nil {
		return d.Errf("%s: %q is not a duration, such as 100ms, 30s or 5m", name, arg)
	}
	if dur <= 0 {
		return d.Errf("%s: %q must be longer than zero", name, arg)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// sizeArg reads one size argument (e.g. 1MiB, 500KB, 65536) of at least
// one byte into dst.
func sizeArg(d *caddyfile.Dispenser, dst *int64) error {
	return sizeArgUpTo(d, dst, math.MaxInt32, "2GiB")
}

// sizeArgUpTo reads one size argument from 1 byte to limit (named
// limitName) into dst.
func sizeArgUpTo(d *caddyfile.Dispenser, dst *int64, limit uint64, limitName string) error {
	name := d.Val()
	var arg string
	if err := oneArg(d, &arg); err != nil {
		return err
	}
	size, err := humanize.ParseBytes(arg)
	if err != nil {
		return d.Errf("%s: %q is not a size, such as 1MiB, 500KB or 65536", name, arg)
	}
	if size < 1 || size > limit {
		return d.Errf("%s: %q must be from 1 byte to %s", name, arg, limitName)
	}
	*dst = int64(size)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
