package resumable

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Delivery states, kept in each upload's record.
const (
	deliveryReceiving  = "receiving"  // bytes are still coming in
	deliveryDelivering = "delivering" // every byte is in; a delivery is running or waiting to retry
	deliveryDelivered  = "delivered"  // the backend answered below 400
	deliveryFailed     = "failed"     // the backend answered 400 or more, or every retry failed
)

// deliveryRecord is what this package keeps about one upload beside its
// bytes, in its Storage (<dir>/<id>.delivery, or an object next to
// tusd's .info in a bucket): its delivery state, and what the delivery
// needs from the creation request. It is written whole, so a crash
// leaves the old or the new version.
type deliveryRecord struct {
	ID       string    `json:"id"`
	Delivery string    `json:"delivery"`
	Group    string    `json:"group,omitempty"`
	Created  time.Time `json:"created"`
	// Host, RemoteAddr and Header are the creation request's: the host
	// and client address of the delivery request, and the headers
	// forwarded to the backend (Authorization, Cookie). Header is
	// cleared once the delivery is final.
	Host       string      `json:"host"`
	RemoteAddr string      `json:"remote_addr"`
	Header     http.Header `json:"header,omitempty"`
	// Server is the name of the Caddy server the creation came in on:
	// with Host, it names the handler that accepted the upload, the only
	// one that serves and delivers it (routeKey).
	Server string `json:"server,omitempty"`
	// Owner lets a request prove it is the creator's once Header is gone:
	// salted hashes of the creation's credentials (owner.go).
	Owner *owner `json:"owner,omitempty"`
	// Attempts counts the deliveries tried.
	Attempts int `json:"attempts"`
	// Size is the upload's length, once every byte is in.
	Size int64 `json:"size"`
	// Finished is when the delivery was delivered or failed.
	Finished time.Time `json:"finished,omitzero"`
	// Answer is the backend's answer to the last attempt, kept so a
	// client that lost it can get it again (see server.go).
	Answer *answer `json:"answer,omitempty"`
	// Error says why the delivery failed.
	Error string `json:"error,omitempty"`
}

// forwardedHeaders are the creation request's headers a backend relies
// on, sent with the delivery.
var forwardedHeaders = []string{"Authorization", "Cookie"}

// newRecord is the record of a new upload created by r.
func newRecord(id, group string, r *http.Request) *deliveryRecord {
	rec := &deliveryRecord{
		ID:         id,
		Delivery:   deliveryReceiving,
		Group:      group,
		Created:    time.Now().UTC(),
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		Header:     make(http.Header),
		Server:     requestRoute(r).server,
	}
	for _, name := range forwardedHeaders {
		if v := r.Header.Values(name); len(v) > 0 {
			rec.Header[name] = v
		}
	}
	rec.Owner = newOwner(rec.Header)
	return rec
}

// route is the key of the handler that accepted the upload.
func (rec *deliveryRecord) route() routeKey {
	return routeKey{server: rec.Server, host: strings.ToLower(rec.Host)}
}

// requestRoute is the key of the handler r reached.
func requestRoute(r *http.Request) routeKey {
	var name string
	if server, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		name = server.Name()
	}
	return routeKey{server: name, host: strings.ToLower(r.Host)}
}

// final records how the delivery ended (deliveryDelivered or
// deliveryFailed) with the answer a client may get again: the
// creation's credentials leave the record (only their hashes stay, in
// Owner), and the answer is kept without Set-Cookie.
func (rec *deliveryRecord) final(delivery string, ans *answer, at time.Time) {
	rec.Delivery = delivery
	rec.Answer = ans.withoutCookies()
	rec.Finished = at
	rec.Header = nil
}

// readRecord reads the record of upload id from store; an error
// matching os.ErrNotExist when there is none.
func readRecord(store Storage, id string) (*deliveryRecord, error) {
	data, err := store.ReadRecord(context.Background(), id)
	if err != nil {
		return nil, err
	}
	rec := new(deliveryRecord)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("reading delivery record %s: %w", id, err)
	}
	return rec, nil
}

// write stores the record in store, replacing the old one whole.
func (rec *deliveryRecord) write(store Storage) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding delivery record %s: %w", rec.ID, err)
	}
	if err := store.WriteRecord(context.Background(), rec.ID, data); err != nil {
		return fmt.Errorf("writing delivery record %s: %w", rec.ID, err)
	}
	return nil
}

// removeUpload removes everything of upload id: its bytes, tusd's info
// and the record.
func removeUpload(store Storage, id string) error {
	return store.Remove(context.Background(), id)
}

// removeData removes the bytes of upload id and tusd's info of it,
// keeping the record (of a delivered upload, for clients that lost the
// answer).
func removeData(store Storage, id string) error {
	return store.RemoveData(context.Background(), id)
}

// recordIDs lists the IDs of every record in store.
func recordIDs(store Storage) ([]string, error) {
	return store.RecordIDs(context.Background())
}
