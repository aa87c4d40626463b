package caddyprogress

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Tracker-wide settings. Some settings are the tracker's, not the
// handler's: every handler that names the tracker reads and writes the
// same records, so one handler's value would apply to the uploads of
// all (a site in status_access token whose uploads another site shows
// to anyone, a max_memory that the handler provisioned last sets).
// Handlers of one config that name one tracker must therefore agree on
// each of them; a difference is a config error that names the setting
// and both values. A reload may change them (on every handler of the
// new config): the old config's handlers are not compared with it.
//
// Defaults count as values: two sites that leave a setting at its
// default agree; one that sets it to anything else does not.

// trackerSetting is one tracker-wide setting: its subdirective, and a
// handler's value of it as compared (and shown in the error, unless
// show says otherwise).
type trackerSetting struct {
	name  string
	value func(h *Handler) string
	// show, if set, is the value as the error shows it (for a secret),
	// and showOther the other handler's when both show the same.
	show      func(h *Handler) string
	showOther string
}

// trackerSettings are the tracker-wide settings, in the order they are
// checked; the README lists the same ("Several handlers on one
// tracker").
var trackerSettings = []trackerSetting{
	{name: "redis", value: func(h *Handler) string { return keyName(h.redisKey) }},
	{name: "status_access", value: func(h *Handler) string {
		if h.StatusAccess == "" {
			return accessByID
		}
		return h.StatusAccess
	}},
	{name: "token_secret", value: secretValue, show: secretShown, showOther: "(a different configured secret)"},
	{name: "client_ids", value: func(h *Handler) string {
		if h.clientIDsAllowed() {
			return "on"
		}
		return "off"
	}},
	{name: "retain", value: func(h *Handler) string { return time.Duration(h.Retain).String() }},
	{name: "max_uploads", value: func(h *Handler) string { return strconv.Itoa(h.MaxUploads) }},
	{name: "max_memory", value: func(h *Handler) string { return strconv.FormatInt(h.MaxMemory, 10) }},
	{name: "max_reservations", value: func(h *Handler) string { return strconv.Itoa(h.MaxReservations) }},
	{name: "max_group_uploads", value: func(h *Handler) string { return strconv.Itoa(h.MaxGroupUploads) }},
	{name: "max_subscribers", value: func(h *Handler) string { return strconv.Itoa(h.MaxSubscribers) }},
	{name: "max_subscribers_per_upload", value: func(h *Handler) string { return strconv.Itoa(h.MaxSubscribersPerUpload) }},
	{name: "rate_limit_total", value: func(h *Handler) string { return rateValue(h.RateLimitTotal) }},
	// the shared bucket's size, when there is one
	{name: "burst", value: func(h *Handler) string {
		if h.RateLimitTotal == 0 {
			return "none (no rate_limit_total)"
		}
		return strconv.Itoa(h.burst(h.RateLimitTotal))
	}},
	// with redis, the interval of the tracker's publisher (the first
	// handler's); without, each handler's streams keep their own
	{name: "interval", value: func(h *Handler) string {
		if h.redisKey == "" {
			return "any (no redis)"
		}
		return time.Duration(h.Interval).String()
	}},
}

// secretValue is a handler's token secret as compared: a hash of the
// resolved secret (none without status_access token).
func secretValue(h *Handler) string {
	if !h.access.on() {
		return "none"
	}
	sum := sha256.Sum256(h.access.secret)
	return string(sum[:])
}

// secretShown says which secret a handler uses, never the secret.
func secretShown(h *Handler) string {
	switch {
	case !h.access.on():
		return "none"
	case h.TokenSecret == "":
		return "(the generated one)"
	}
	return "(a configured secret)"
}

func rateValue(bytesPerSecond int64) string {
	if bytesPerSecond == 0 {
		return "none"
	}
	return strconv.FormatInt(bytesPerSecond, 10) + " bytes/s"
}

// settingsUsers are the handlers provisioned on a tracker, each with its
// config and its tracker-wide values.
type settingsUsers struct {
	mu    sync.Mutex
	users map[*Handler]settingsUser
}

type settingsUser struct {
	config any      // the handler's config (its events app): one config load
	values []string // by trackerSettings
}

// claimTrackerSettings records the handler's tracker-wide settings on
// its tracker, or returns the error naming the first setting on which
// it differs from another handler of its config on that tracker.
func (h *Handler) claimTrackerSettings(ctx caddy.Context) error {
	config, err := ctx.App("events") // one instance per config load
	if err != nil {
		return fmt.Errorf("getting events app: %v", err)
	}
	values := make([]string, len(trackerSettings))
	for i, s := range trackerSettings {
		values[i] = s.value(h)
	}
	su := &h.tracker.settings
	su.mu.Lock()
	defer su.mu.Unlock()
	for other, u := range su.users {
		if other == h || u.config != config {
			continue
		}
		for i, s := range trackerSettings {
			if values[i] != u.values[i] {
				return settingsError(h.Tracker, s, h, other)
			}
		}
	}
	if su.users == nil {
		su.users = make(map[*Handler]settingsUser)
	}
	su.users[h] = settingsUser{config: config, values: values}
	return nil
}

// releaseTrackerSettings forgets the handler's settings.
func (h *Handler) releaseTrackerSettings() {
	if h.tracker == nil {
		return
	}
	su := &h.tracker.settings
	su.mu.Lock()
	delete(su.users, h)
	su.mu.Unlock()
}

// settingsError says that two handlers of one tracker differ on s.
func settingsError(tracker string, s trackerSetting, h, other *Handler) error {
	mine, theirs := s.value(h), s.value(other)
	if s.show != nil {
		mine, theirs = s.show(h), s.show(other)
		if mine == theirs {
			theirs = s.showOther
		}
	}
	return fmt.Errorf("tracker %q: one handler sets %s %s, another %s; handlers that name one tracker must set the same %s, a tracker-wide setting (or name different trackers with tracker <name>)",
		tracker, s.name, mine, theirs, s.name)
}
