package resumable

import (
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// UnmarshalCaddyfile reads the resumable block of upload_progress; the
// dispenser is at the token "resumable". The syntax is in the doc
// comment of caddyprogress.Handler.UnmarshalCaddyfile:
//
//	resumable <path> {
//		dir             <folder>
//		s3              s3://<bucket>[/<prefix>] {
//			endpoint   <url>
//			region     <region>
//			path_style
//		}
//		max_size        <size>
//		max_disk        <size>
//		expire          <duration>
//		reserve_for     <duration>
//		deliver_to      <path>
//		deliver_method  <method>
//		deliver_as      raw | multipart [<field>]
//		deliver_retries <n>
//		ietf_draft
//		cors_origins    <origin...> | *
//	}
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("resumable: expected the tus endpoint path, e.g. /files/")
	}
	c.Path = d.Val()
	if d.NextArg() {
		return d.Errf("resumable: expected one path, got more")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("resumable %s: expected one argument", name)
			}
			return args[0], nil
		}
		var err error
		var arg string
		switch name {
		case "dir":
			c.Dir, err = one()
		case "s3":
			if len(args) != 1 {
				return d.Errf("resumable s3: expected one bucket URL such as s3://uploads or s3://uploads/tus")
			}
			if err := c.unmarshalS3(d, args[0]); err != nil {
				return err
			}
		case "max_size":
			if arg, err = one(); err == nil {
				c.MaxSize, err = parseSize(d, name, arg)
			}
		case "max_disk":
			if arg, err = one(); err == nil {
				c.MaxDisk, err = parseSize(d, name, arg)
			}
		case "expire":
			if arg, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(arg)
				if perr != nil || dur <= 0 {
					return d.Errf("resumable expire: %q is not a duration longer than zero", arg)
				}
				c.Expire = caddy.Duration(dur)
			}
		case "reserve_for":
			if arg, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(arg)
				if perr != nil || dur <= 0 {
					return d.Errf("resumable reserve_for: %q is not a duration longer than zero", arg)
				}
				c.ReserveFor = caddy.Duration(dur)
			}
		case "deliver_to":
			c.DeliverTo, err = one()
		case "deliver_method":
			if arg, err = one(); err == nil {
				c.DeliverMethod = strings.ToUpper(arg)
			}
		case "deliver_as":
			switch {
			case len(args) == 1 && args[0] == DeliverRaw:
				c.DeliverAs = DeliverRaw
			case len(args) >= 1 && len(args) <= 2 && args[0] == DeliverMultipart:
				c.DeliverAs = DeliverMultipart
				if len(args) == 2 {
					c.DeliverField = args[1]
				}
			default:
				return d.Errf("resumable deliver_as: %q is not raw or multipart (optionally followed by a field name)", strings.Join(args, " "))
			}
		case "deliver_retries":
			if arg, err = one(); err == nil {
				n, perr := strconv.Atoi(arg)
				if perr != nil || n < 0 {
					return d.Errf("resumable deliver_retries: %q is not a whole number of at least 0", arg)
				}
				c.DeliverRetries = n
				if n == 0 {
					c.DeliverRetries = -1 // none; 0 in JSON is the default
				}
			}
		case "ietf_draft":
			if len(args) != 0 {
				return d.Errf("resumable ietf_draft: expected no argument")
			}
			c.IETFDraft = true
		case "cors_origins":
			if len(args) == 0 {
				return d.Errf("resumable cors_origins: expected one or more origins such as https://app.example.com, or *")
			}
			if err := checkOrigins(args); err != nil {
				return d.Errf("%v", err)
			}
			c.CORSOrigins = append(c.CORSOrigins, args...)
		default:
			return d.Errf("unrecognized resumable subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalS3 reads the s3 setting and its block; the dispenser is
// past the bucket URL.
func (c *Config) unmarshalS3(d *caddyfile.Dispenser, url string) error {
	if c.S3 != nil {
		return d.Errf("resumable s3: set once")
	}
	c.S3 = &S3Config{URL: url}
	if _, _, err := c.S3.Bucket(); err != nil {
		return d.Errf("%v", err)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		args := d.RemainingArgs()
		switch name {
		case "endpoint", "region":
			if len(args) != 1 {
				return d.Errf("resumable s3 %s: expected one argument", name)
			}
			if name == "endpoint" {
				c.S3.Endpoint = args[0]
			} else {
				c.S3.Region = args[0]
			}
		case "path_style":
			if len(args) != 0 {
				return d.Errf("resumable s3 path_style: expected no argument")
			}
			c.S3.PathStyle = true
		default:
			return d.Errf("unrecognized resumable s3 subdirective %q (expected endpoint, region or path_style)", name)
		}
	}
	if err := c.S3.validate(); err != nil {
		return d.Errf("%v", err)
	}
	return nil
}

// parseSize reads a size such as 10GiB or 500MB.
func parseSize(d *caddyfile.Dispenser, name, arg string) (int64, error) {
	size, err := humanize.ParseBytes(arg)
	if err != nil || size < 1 || size > math.MaxInt64 {
		return 0, d.Errf("resumable %s: %q is not a size of at least 1 byte", name, arg)
	}
	return int64(size), nil
}
