package resumable

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
)

// owner lets a request prove it comes from an upload's creator after
// the creation's credentials have left its record: for each credential
// header the creation had (Authorization, Cookie), a SHA-256 of a
// random salt and the header's values. A request proves it is the
// creator's if one of those headers has the same values.
type owner struct {
	Salt   string            `json:"salt"`
	Hashes map[string]string `json:"hashes"`
}

// newOwner hashes the credential headers in header; nil without any.
func newOwner(header http.Header) *owner {
	if len(header) == 0 {
		return nil
	}
	o := &owner{Salt: rand.Text(), Hashes: make(map[string]string, len(header))}
	for name, values := range header {
		o.Hashes[name] = o.hash(name, values)
	}
	return o
}

func (o *owner) hash(name string, values []string) string {
	h := sha256.New()
	h.Write([]byte(o.Salt))
	h.Write([]byte{0})
	h.Write([]byte(http.CanonicalHeaderKey(name)))
	for _, v := range values {
		h.Write([]byte{0})
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// proves reports whether r shows one of the creation's credential
// headers with the same values.
func (o *owner) proves(r *http.Request) bool {
	if o == nil {
		return false
	}
	for name, want := range o.Hashes {
		values := r.Header.Values(name)
		if len(values) > 0 && subtle.ConstantTimeCompare([]byte(o.hash(name, values)), []byte(want)) == 1 {
			return true
		}
	}
	return false
}
