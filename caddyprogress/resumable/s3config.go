package resumable

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// S3Config is the s3 setting of the resumable block: the uploads live
// in a bucket of an S3-compatible service (tusd's S3 store, package
// s3store), not in a folder. Credentials come from the usual AWS
// environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
// AWS_SESSION_TOKEN), AWS_PROFILE with the shared files, or the
// instance's role.
//
//	s3 s3://<bucket>[/<prefix>] {
//		endpoint   <url>
//		region     <region>
//		path_style
//	}
type S3Config struct {
	// The bucket, and the key prefix of the uploads' objects if any:
	// "s3://<bucket>" or "s3://<bucket>/<prefix>", e.g.
	// "s3://uploads/tus". The bucket must exist. Required.
	URL string `json:"url,omitempty"`

	// The base URL of the S3 API, for a service other than AWS S3, e.g.
	// "http://127.0.0.1:7070" or "https://s3.example.com". Default:
	// AWS S3 of the region (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
	// when set).
	Endpoint string `json:"endpoint,omitempty"`

	// The region. Default: AWS_REGION or the shared config's, else
	// "us-east-1".
	Region string `json:"region,omitempty"`

	// Address the bucket in the path (<endpoint>/<bucket>/<key>) rather
	// than in the host name (<bucket>.<endpoint>); most self-hosted
	// services need it. Default: off.
	PathStyle bool `json:"path_style,omitempty"`
}

// Bucket returns the bucket and the key prefix (empty, or ending in /)
// of the URL, or says what is wrong with it.
func (c S3Config) Bucket() (bucket, prefix string, err error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "s3" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("resumable s3 %q: expected s3://<bucket> or s3://<bucket>/<prefix>", c.URL)
	}
	bucket = u.Host
	if err := validateBucket(bucket); err != nil {
		return "", "", fmt.Errorf("resumable s3 %q: bucket %q %w", c.URL, bucket, err)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		for _, part := range strings.Split(prefix, "/") {
			if part == "" || part == "." || part == ".." || !validKeyPart(part) {
				return "", "", fmt.Errorf("resumable s3 %q: prefix %q must be names made of letters, digits, ! - _ . * ' ( ) joined by single slashes", c.URL, prefix)
			}
		}
		prefix += "/"
	}
	return bucket, prefix, nil
}

// validate checks the settings, without asking the service.
func (c S3Config) validate() error {
	if _, _, err := c.Bucket(); err != nil {
		return err
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("resumable s3 endpoint %q: expected an http:// or https:// URL such as https://s3.example.com", c.Endpoint)
		}
	}
	for _, r := range c.Region {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
			return fmt.Errorf("resumable s3 region %q: expected a region name such as eu-west-1 (lower-case letters, digits, -)", c.Region)
		}
	}
	return nil
}

// Key names the store: its bucket and prefix, and its endpoint if set
// (its scheme and host in lower case, without a trailing /), so that two
// spellings of one bucket name one store.
func (c S3Config) Key() string {
	bucket, prefix, _ := c.Bucket()
	key := "s3://" + bucket + "/" + prefix
	if c.Endpoint != "" {
		endpoint := c.Endpoint
		if u, err := url.Parse(endpoint); err == nil {
			u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
			endpoint = u.String()
		}
		key += "@" + strings.TrimSuffix(endpoint, "/")
	}
	return key
}

// validateBucket says why name is not an S3 bucket name: 3 to 63
// lower-case letters, digits, dots and hyphens, starting and ending with
// a letter or digit.
func validateBucket(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return errors.New("must be 3 to 63 characters long")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return errors.New("may hold only lower-case letters, digits, dots and hyphens")
		}
	}
	if first, last := name[0], name[len(name)-1]; first == '.' || first == '-' || last == '.' || last == '-' {
		return errors.New("must start and end with a letter or digit")
	}
	return nil
}

// validKeyPart reports whether part is made of the characters S3 keys
// take safely: letters, digits and ! - _ . * ' ( ).
func validKeyPart(part string) bool {
	for i := 0; i < len(part); i++ {
		c := part[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!-_.*'()", c) >= 0) {
			return false
		}
	}
	return true
}
