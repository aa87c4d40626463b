package resumable

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// maxAnswerBody is the most of the backend's answer body kept and passed
// on to the client.
const maxAnswerBody = 1 << 20

// answer is the backend's answer to a delivery: its status, headers and
// up to maxAnswerBody of its body.
type answer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// writeTo answers a client with the backend's answer.
func (a *answer) writeTo(w http.ResponseWriter) {
	h := w.Header()
	for name, values := range a.Header {
		h[name] = values
	}
	h.Set("Content-Length", strconv.Itoa(len(a.Body)))
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// notForwarded are the backend's answer headers not passed on: the
// length changes when the body is cut at maxAnswerBody, and the tus and
// CORS headers are the proxy's own (cors_origins).
var notForwarded = []string{"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
	"Tus-Resumable", "Upload-Offset", "Upload-Length", "Location", "Upload-Expires",
	"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"}

// answerWriter is the ResponseWriter a delivery is sent through: it
// keeps the status, the headers and the start of the body.
type answerWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newAnswerWriter() *answerWriter { return &answerWriter{header: make(http.Header)} }

func (w *answerWriter) Header() http.Header { return w.header }

func (w *answerWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *answerWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if room := maxAnswerBody - w.body.Len(); room > 0 {
		w.body.Write(p[:min(len(p), room)])
	}
	return len(p), nil // the rest is read and dropped, so the backend is not held up
}

// Flush does nothing: the answer is passed on once complete.
func (w *answerWriter) Flush() {}

// answer returns what was written.
func (w *answerWriter) answer() *answer {
	h := w.header.Clone()
	for _, name := range notForwarded {
		h.Del(name)
	}
	return &answer{Status: w.status, Header: h, Body: bytes.Clone(w.body.Bytes())}
}

// withoutCookies is the answer without the backend's Set-Cookie: what
// is kept for a client that asks again (states.go), whose cookies are
// its own.
func (a *answer) withoutCookies() *answer {
	if a == nil || (a.Header.Get("Set-Cookie") == "" && a.Header.Get("Set-Cookie2") == "") {
		return a
	}
	kept := *a
	kept.Header = a.Header.Clone()
	kept.Header.Del("Set-Cookie")
	kept.Header.Del("Set-Cookie2")
	return &kept
}

// jsonBody encodes v as a JSON line.
func jsonBody(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b) + "\n", nil
}

var _ http.Flusher = (*answerWriter)(nil)
