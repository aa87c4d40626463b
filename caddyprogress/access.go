package caddyprogress

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
)

// Private progress. With status_access token, the progress of an upload
// (status, events, nginx report) and of a group is shown only to a
// client with its token:
//
//	upload_progress {
//		status_access token
//		token_secret  {env.UPLOAD_PROGRESS_SECRET}   # default: generated, kept in Caddy's storage
//		token_cookie  upload_token                   # default: no cookie
//		client_ids    off                            # default: on
//	}
//
// A token is HMAC-SHA256(secret, kind, tracker, ID) in URL-safe base64,
// with kind "upload" or "group", so an upload's token never opens a
// group of the same name. Tokens are stateless: every instance with the
// same secret accepts them, across reloads. The upload's response
// carries X-Upload-Token (and X-Upload-Group-Token for the group it
// joined); a reservation's 201 carries X-Upload-Token and a "token"
// JSON field, a group reservation's X-Upload-Group-Token and "token".
// A client shows it as "Authorization: Bearer <token>", as the query
// parameter token (EventSource cannot set headers), or in the cookie
// token_cookie. Without a valid token the answer is the one for an
// unknown ID, so a stranger cannot tell a live upload from none.
//
// A token is also what lets an upload use a name: an upload keeps the
// ID it names only if it shows that ID's token (screenClientID), and
// joins the group it names only if it shows the group's token
// (screenGroup, group.go); otherwise it gets a fresh ID, or is tracked
// on its own, whether or not the name is in use. So a stranger who
// knows an ID or a group's name can neither learn that it is in use
// nor take, replace or join it.

// Values of status_access.
const (
	accessByID    = "id"
	accessByToken = "token"
)

// Response headers that carry tokens, and the query parameter that may.
const (
	uploadTokenHeader = "X-Upload-Token"
	groupTokenHeader  = "X-Upload-Group-Token"
	tokenQuery        = "token"
)

// Token kinds, so that the tokens of uploads and groups differ.
const (
	uploadToken = "upload"
	groupToken  = "group"
)

// minSecretLength is the least length of token_secret, in bytes.
const minSecretLength = 16

// tokenAccess is a handler's resolved status_access token settings;
// its zero value means status_access id.
type tokenAccess struct {
	secret []byte // nil unless status_access is token
}

func (a tokenAccess) on() bool { return a.secret != nil }

// validateAccess checks status_access, token_secret and token_cookie.
func (h *Handler) validateAccess() error {
	switch h.StatusAccess {
	case "", accessByID:
		if h.TokenSecret != "" || h.TokenCookie != "" {
			return fmt.Errorf("token_secret and token_cookie need status_access token")
		}
	case accessByToken:
		if h.TokenCookie != "" && (&http.Cookie{Name: h.TokenCookie, Value: "x"}).Valid() != nil {
			return fmt.Errorf("token_cookie %q is not a valid cookie name", h.TokenCookie)
		}
	default:
		return fmt.Errorf("status_access %q: must be id or token", h.StatusAccess)
	}
	return nil
}

// provisionAccess resolves the token secret of status_access token: the
// configured one, with its placeholders replaced, or the one generated
// once and kept in Caddy's storage.
func (h *Handler) provisionAccess(ctx caddy.Context) error {
	if h.StatusAccess != accessByToken {
		return nil
	}
	if h.TokenSecret != "" {
		secret := caddy.NewReplacer().ReplaceAll(h.TokenSecret, "")
		if len(secret) < minSecretLength {
			// never log or return the secret itself
			return fmt.Errorf("token_secret is %d bytes long once its placeholders are replaced; at least %d are needed (is its environment variable set?)",
				len(secret), minSecretLength)
		}
		h.access.secret = []byte(secret)
		return nil
	}
	secret, err := storedSecret(ctx, "upload_progress/"+h.Tracker+"/token_secret")
	if err != nil {
		return fmt.Errorf("tracker %q: token secret: %w", h.Tracker, err)
	}
	h.access.secret = secret
	return nil
}

// storedSecret loads the secret kept in Caddy's storage under key, or
// makes and stores one if there is none yet. The storage's lock makes
// every instance sharing the storage agree on one secret.
func storedSecret(ctx caddy.Context, key string) ([]byte, error) {
	storage := ctx.Storage()
	lockCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := storage.Lock(lockCtx, key); err != nil {
		return nil, fmt.Errorf("locking %s in storage: %w", key, err)
	}
	defer func() { _ = storage.Unlock(context.WithoutCancel(ctx), key) }()

	stored, err := storage.Load(lockCtx, key)
	if err == nil && len(stored) >= minSecretLength {
		return stored, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("loading %s from storage: %w", key, err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read never returns an error
	if err := storage.Store(lockCtx, key, secret); err != nil {
		return nil, fmt.Errorf("storing %s: %w", key, err)
	}
	return secret, nil
}

// token returns the token of the upload or group (kind) with this ID.
func (h *Handler) token(kind, id string) string {
	mac := hmac.New(sha256.New, h.access.secret)
	for _, field := range [...]string{"caddy-upload-progress token v1", kind, h.Tracker, id} {
		_ = binary.Write(mac, binary.BigEndian, uint32(len(field))) // length-prefixed: fields cannot run into each other
		mac.Write([]byte(field))
	}
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// tokenAllows reports whether r shows the token of the upload or group
// (kind) with this ID, as a bearer token, a token query parameter or
// the token_cookie cookie. Without status_access token, it is true.
func (h *Handler) tokenAllows(r *http.Request, kind, id string) bool {
	if !h.access.on() {
		return true
	}
	want := []byte(h.token(kind, id))
	matches := func(shown string) bool { return hmac.Equal([]byte(shown), want) }

	for _, auth := range r.Header.Values("Authorization") {
		if scheme, shown, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") && matches(strings.TrimSpace(shown)) {
			return true
		}
	}
	if r.URL.RawQuery != "" {
		for _, shown := range r.URL.Query()[tokenQuery] {
			if matches(shown) {
				return true
			}
		}
	}
	if h.TokenCookie != "" {
		for _, c := range r.CookiesNamed(h.TokenCookie) {
			if matches(c.Value) {
				return true
			}
		}
	}
	return false
}

// showsToken reports whether an upload request shows the token of the
// upload or group (kind) with this ID: in the request header named
// header (X-Upload-Token, X-Upload-Group-Token), or as the progress
// routes take it (tokenAllows).
func (h *Handler) showsToken(r *http.Request, kind, id, header string) bool {
	want := []byte(h.token(kind, id))
	for _, shown := range r.Header.Values(header) {
		if hmac.Equal([]byte(strings.TrimSpace(shown)), want) {
			return true
		}
	}
	return h.tokenAllows(r, kind, id)
}

// setTokenHeaders puts the upload's token, and its group's, on the
// response to the upload, with status_access token.
func (h *Handler) setTokenHeaders(w http.ResponseWriter, id, group string) {
	if !h.access.on() {
		return
	}
	w.Header().Set(uploadTokenHeader, h.token(uploadToken, id))
	if group != "" {
		w.Header().Set(groupTokenHeader, h.token(groupToken, group))
	}
}

// reservation is the 201 body of POST <status_path>: the reserved ID,
// "pending", and with status_access token the upload's token.
type reservation struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Token  string `json:"token,omitempty"`
}

// writeReservation answers a reservation of u with 201.
func (h *Handler) writeReservation(w http.ResponseWriter, u *upload) error {
	w.Header().Set(h.IDHeader, u.id)
	res := reservation{ID: u.id, Status: progress.StatePending.String()}
	if h.access.on() {
		res.Token = h.token(uploadToken, u.id)
		w.Header().Set(uploadTokenHeader, res.Token)
	}
	return writeJSON(w, http.StatusCreated, res)
}

// clientIDsAllowed is client_ids: whether uploads may name their own ID.
func (h *Handler) clientIDsAllowed() bool { return h.ClientIDs == nil || *h.ClientIDs }

// screenClientID decides whether an upload keeps the ID its client sent
// (id, and err from validating it), or gets a fresh one (""):
//   - with status_access token, it keeps it only if the request shows
//     the ID's token (showsToken), so a stranger never learns whether an
//     ID is in use (no 409 for another's live upload) and never replaces
//     another's record, reservation or finished upload;
//   - with client_ids off, only if it names a live reservation;
//   - with client_ids on and status_access id, always (an invalid one is
//     refused with err).
//
// An ID that is dropped takes its error with it.
func (h *Handler) screenClientID(r *http.Request, id string, err error) (string, error) {
	if h.clientIDsAllowed() && (!h.access.on() || err != nil || id == "") {
		return id, err
	}
	if err != nil || id == "" {
		return "", nil
	}
	if h.access.on() && !h.showsToken(r, uploadToken, id, uploadTokenHeader) {
		return "", nil
	}
	if h.clientIDsAllowed() {
		return id, nil
	}
	if h.uploads.reserved(id) { // here or, with redis, on another instance
		return id, nil
	}
	return "", nil
}
