package redistracker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The schemes beyond go-redis's own (redis, rediss, unix) that choose
// its Sentinel and Cluster parsers; the URL forms are in the package doc.
const (
	schemeSentinel    = "redis-sentinel"
	schemeSentinelTLS = "rediss-sentinel"
	schemeCluster     = "redis-cluster"
	schemeClusterTLS  = "rediss-cluster"
)

// newClient makes the go-redis client a URL names: a *redis.Client for
// one server or a Sentinel-managed master, a *redis.ClusterClient for a
// cluster, used through the redis.UniversalClient interface. Every
// client honours its context's deadline (ContextTimeoutEnabled), so no
// call waits longer than the package's timeouts, and names its
// connections clientName (CLIENT LIST) unless the URL sets client_name.
func newClient(rawURL, clientName string) (redis.UniversalClient, error) {
	if _, err := url.Parse(rawURL); err != nil {
		// url.Error repeats the URL, password included: keep its reason only
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("parsing redis URL: %w", err)
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redis URL has no scheme (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://)")
	}
	switch scheme {
	case "redis", "rediss", "unix":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parsing redis URL: %w", err)
		}
		opt.ContextTimeoutEnabled = true
		if opt.ClientName == "" {
			opt.ClientName = clientName
		}
		return redis.NewClient(opt), nil
	case schemeSentinel, schemeSentinelTLS:
		opt, err := redis.ParseFailoverURL(plainScheme(scheme) + "://" + rest)
		if err != nil {
			return nil, fmt.Errorf("parsing redis-sentinel URL: %w", err)
		}
		if opt.MasterName == "" {
			return nil, fmt.Errorf("redis-sentinel URL needs ?master_name=<name>")
		}
		opt.ContextTimeoutEnabled = true
		if opt.ClientName == "" {
			opt.ClientName = clientName
		}
		return redis.NewFailoverClient(opt), nil
	case schemeCluster, schemeClusterTLS:
		opt, err := redis.ParseClusterURL(plainScheme(scheme) + "://" + rest)
		if err != nil {
			return nil, fmt.Errorf("parsing redis-cluster URL: %w", err)
		}
		opt.ContextTimeoutEnabled = true
		if opt.ClientName == "" {
			opt.ClientName = clientName
		}
		return redis.NewClusterClient(opt), nil
	}
	return nil, fmt.Errorf("redis URL scheme %q is not one of redis, rediss, unix, redis-sentinel, rediss-sentinel, redis-cluster, rediss-cluster", scheme)
}

// plainScheme maps redis-sentinel and redis-cluster to redis, and their
// TLS forms to rediss, for go-redis's parsers.
func plainScheme(scheme string) string {
	if strings.HasPrefix(scheme, "rediss") {
		return "rediss"
	}
	return "redis"
}

// Key returns a comparable form of a redis URL, so that the core can
// refuse two handlers that name one tracker with different redis
// settings: the scheme, the hosts with their default port, the db
// (default 0) and the query sorted, with the password replaced by a
// hash so that the key can go into an error message. Two URLs with the
// same key reach the same data. A URL the package cannot use is an error.
func Key(rawURL string) (string, error) {
	c, err := newClient(rawURL, "")
	if err != nil {
		return "", err
	}
	_ = c.Close()
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parsing redis URL: %w", err)
	}
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil {
		b.WriteString(u.User.Username())
		if pw, ok := u.User.Password(); ok {
			sum := sha256.Sum256([]byte(pw))
			b.WriteString(":sha256-" + hex.EncodeToString(sum[:8]))
		}
		b.WriteString("@")
	}
	if u.Scheme == "unix" {
		b.WriteString(u.Path)
	} else {
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "6379"
		}
		b.WriteString(net.JoinHostPort(host, port))
		db := strings.Trim(u.Path, "/")
		if db == "" {
			db = "0"
		}
		if !strings.HasSuffix(u.Scheme, "-cluster") {
			b.WriteString("/" + db)
		}
	}
	if q := u.Query(); len(q) > 0 {
		for _, pw := range q["password"] { // the master's, in a Sentinel URL
			sum := sha256.Sum256([]byte(pw))
			q.Set("password", "sha256-"+hex.EncodeToString(sum[:8]))
		}
		b.WriteString("?" + q.Encode()) // Encode sorts by key
	}
	return b.String(), nil
}
