package resumable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// outcome is how one delivery attempt went.
type outcome struct {
	answer      *answer // the backend's, or one made up for a failure without one
	transient   bool    // worth retrying: no connection, 502, 503, 504
	interrupted bool    // the proxy is stopping; the delivery runs again at the next start
	err         error   // what went wrong, for the log and the status
	// early is set when the backend answered below 400 before it read
	// the whole body: the delivery failed (as on the plain path), and
	// status is the backend's code, answer the proxy's own 502.
	early  bool
	status int
}

// deliverNow delivers the upload whose last byte the request st has
// just stored, through that request's route. The backend's answer (up
// to 1MiB of its body) is returned as the answer to that request. A
// transient failure is answered 503 with Retry-After while the delivery
// is retried in the background; a client is never told of success
// unless the backend answered below 400.
func (s *Server) deliverNow(st *requestState, info handler.FileInfo) (resp handler.HTTPResponse, err error) {
	rec, err := readRecord(s.spool.store, info.ID)
	if err != nil {
		s.logger.Error("reading delivery record", zap.String("id", info.ID), zap.Error(err))
		return handler.HTTPResponse{}, jsonError("ERR_INTERNAL", http.StatusInternalServerError, "the upload's record cannot be read")
	}
	e := s.spool.entry(rec)
	st.entry = e
	claimErr := s.spool.claim(e)
	if claimErr == nil {
		// another instance may have delivered it between the record read
		// above and the claim (its lock lost meanwhile)
		if now, err := readRecord(s.spool.store, info.ID); err != nil || now.Delivery != deliveryReceiving {
			s.spool.release(e)
			claimErr = ErrClaimed
		}
	}
	if errors.Is(claimErr, errBusy) || errors.Is(claimErr, ErrClaimed) {
		return handler.HTTPResponse{}, jsonError("ERR_UPLOAD_DELIVERING", http.StatusLocked, "the upload is already being delivered")
	}
	rec.Size = info.Size
	rec.Delivery = deliveryDelivering
	if err := rec.write(s.spool.store); err != nil {
		if claimErr == nil {
			s.spool.release(e)
		}
		s.logger.Error("starting a delivery", zap.String("id", info.ID), zap.Error(err))
		return handler.HTTPResponse{}, jsonError("ERR_INTERNAL", http.StatusInternalServerError, "the upload's record cannot be written")
	}
	e.setDelivery(deliveryDelivering)
	e.setExpiry(time.Time{})
	s.track(e, rec).Delivering()
	if claimErr != nil {
		// the claim cannot be decided (Redis down): the upload is stored
		// whole and recorded as delivering, and the sweeper of whichever
		// instance first claims it delivers it (expire.go)
		s.logger.Warn("delivery postponed: its claim cannot be taken", zap.String("id", e.id), zap.Error(claimErr))
		e.retryAt.Store(time.Now().Add(s.spool.sweepEvery()).UnixNano())
		return handler.HTTPResponse{}, retryLater(e.retryAfter())
	}

	defer func() {
		// the next handler's panics are caught in attempt; this is for any
		// other, so that the claim never outlives the request
		if v := recover(); v != nil {
			s.logger.Error("delivery panicked", zap.String("id", e.id),
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			s.settleAfterPanic(e, v)
			resp, err = handler.HTTPResponse{}, retryLater(e.retryAfter())
		}
	}()
	return s.deliverThrough(st, rec, e)
}

// deliverThrough delivers the claimed upload through the route of the
// request that stored its last byte, and turns the backend's answer
// into that request's (its headers, status and body).
func (s *Server) deliverThrough(st *requestState, rec *deliveryRecord, e *entry) (handler.HTTPResponse, error) {
	rt := routeOf(s, st.r, st.next)
	out := s.attempt(&rt, rec, e)
	ans, err := s.settle(e, rec, out)
	s.spool.offerRoute(rt) // kept if a retry was scheduled: it goes the same way
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	st.answered = true
	for name, values := range ans.Header {
		st.w.Header()[name] = values
	}
	if ans.Status >= 400 {
		return handler.HTTPResponse{}, handler.Error{
			ErrorCode:    "ERR_DELIVERY_FAILED",
			Message:      fmt.Sprintf("the backend answered %d", ans.Status),
			HTTPResponse: handler.HTTPResponse{StatusCode: ans.Status, Body: string(ans.Body), Header: handler.HTTPHeader{}},
		}
	}
	return handler.HTTPResponse{StatusCode: ans.Status, Body: string(ans.Body)}, nil
}

// redeliver is a delivery in the background: a retry, or one cut short
// by a restart. The caller has claimed e.
func (s *Server) redeliver(rt *route, e *entry) {
	rec, err := readRecord(s.spool.store, e.id)
	if err != nil || rec.Delivery != deliveryDelivering {
		s.spool.release(e)
		return
	}
	_, _ = s.settle(e, rec, s.attempt(rt, rec, e))
}

// settle records how an attempt went: delivered, failed, or to be
// retried. It returns the answer for the client of a delivery in a
// request, or an error (503) when the delivery goes on in the background.
func (s *Server) settle(e *entry, rec *deliveryRecord, out outcome) (*answer, error) {
	now := time.Now().UTC()
	switch {
	case out.interrupted:
		s.spool.release(e)
		if s.spool.ctx.Err() == nil { // the claim was lost, not the proxy stopping
			return nil, retryLater(strconv.Itoa(int(s.spool.sweepEvery().Seconds() + 0.999)))
		}
		return nil, jsonError("ERR_SERVER_SHUTDOWN", http.StatusServiceUnavailable,
			"the proxy is stopping; the upload is stored and is delivered when it runs again")
	case out.answer.Status < 400 && !out.early:
		rec.final(deliveryDelivered, out.answer, now)
		if err := rec.write(s.spool.store); err != nil {
			s.logger.Error("recording a delivery", zap.String("id", rec.ID), zap.Error(err))
		}
		if err := removeData(s.spool.store, rec.ID); err != nil {
			s.logger.Error("removing a delivered upload", zap.String("id", rec.ID), zap.Error(err))
		}
		e.setDelivery(deliveryDelivered)
		s.ended(e, rec, progress.StateComplete, out.answer.Status, "")
		s.spool.release(e)
		s.spool.forget(rec.ID)
		return out.answer, nil
	case out.transient && rec.Attempts <= s.cfg.retries():
		wait := backoff(rec.Attempts)
		s.logger.Warn("delivery failed; retrying",
			zap.String("id", rec.ID), zap.Int("attempt", rec.Attempts), zap.Duration("wait", wait), zap.Error(out.err))
		s.spool.scheduleDelivery(e, wait)
		return nil, retryLater(strconv.Itoa(int(wait.Seconds() + 0.999)))
	}
	msg := fmt.Sprintf("the backend answered %d %s", out.answer.Status, http.StatusText(out.answer.Status))
	if out.err != nil {
		msg = fmt.Sprintf("delivering to the backend: %v", out.err)
	}
	s.logger.Warn("delivery failed", zap.String("id", rec.ID), zap.Int("attempts", rec.Attempts), zap.String("error", msg))
	rec.final(deliveryFailed, out.answer, now)
	rec.Error = msg
	if err := rec.write(s.spool.store); err != nil {
		s.logger.Error("recording a failed delivery", zap.String("id", rec.ID), zap.Error(err))
	}
	e.setDelivery(deliveryFailed)
	e.setExpiry(now.Add(s.cfg.expire()))
	status := out.answer.Status
	if out.early {
		status = out.status // the backend's, which it sent too soon
	}
	s.ended(e, rec, progress.StateError, status, publicError(out))
	s.spool.release(e)
	return out.answer, nil
}

// retryLater is the answer to the request that carried the last byte
// while the delivery is retried in the background: 503 with Retry-After.
func retryLater(retryAfter string) handler.Error {
	err := jsonError("ERR_DELIVERY_PENDING", http.StatusServiceUnavailable,
		"the upload is stored, but the backend is unavailable; its delivery is retried in the background")
	err.HTTPResponse.Header["Retry-After"] = retryAfter
	return err
}

// publicError says why a delivery failed, without internal detail.
func publicError(out outcome) string {
	if out.early {
		return phraseAnsweredEarly
	}
	if out.err != nil {
		return fmt.Sprintf("the backend could not be reached (%d)", out.answer.Status)
	}
	return fmt.Sprintf("the backend answered %d %s", out.answer.Status, http.StatusText(out.answer.Status))
}

// phraseAnsweredEarly is the public error of a delivery the backend
// answered below 400 before it read the whole body: the plain path's
// phrase for the same thing (caddyprogress/outcome.go).
const phraseAnsweredEarly = "upstream answered before the body ended"

// backoff is the wait before the retry that follows attempt n (1 for
// the first): 1s, 2s, 4s, ... up to 30s.
func backoff(n int) time.Duration {
	if n > 5 {
		return 30 * time.Second
	}
	return min(time.Second<<(n-1), 30*time.Second)
}

// attempt sends the upload to the backend once, through rt.
func (s *Server) attempt(rt *route, rec *deliveryRecord, e *entry) outcome {
	// not the client's: the delivery outlives its request; it ends if
	// the spool stops or the claim is lost (another instance may deliver)
	ctx := s.spool.deliveryContext(e)
	rec.Attempts++
	e.setAttempts(rec.Attempts)
	e.delivered.Store(0)
	e.retryAt.Store(0)
	if err := rec.write(s.spool.store); err != nil {
		s.logger.Error("counting a delivery attempt", zap.String("id", rec.ID), zap.Error(err))
	}

	info, err := s.uploadInfo(ctx, rec.ID)
	if err != nil {
		return failure(http.StatusInternalServerError, fmt.Errorf("reading the stored upload's info: %w", err), false)
	}
	file, err := s.spool.store.Open(ctx, rec.ID)
	if err != nil {
		return failure(http.StatusInternalServerError, fmt.Errorf("opening the stored upload: %w", err), false)
	}
	defer file.Close()

	body, length, contentType := rt.srv.deliveryBody(file, info)
	req := rt.srv.deliveryRequest(ctx, rec, info, &countingReader{r: body, n: &e.delivered}, length, contentType)
	w := newAnswerWriter()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, rt.server)
	err = s.serveNext(rt, w, req)
	if ctx.Err() != nil {
		return outcome{interrupted: true, err: ctx.Err()}
	}
	if errors.Is(err, errAnswerBroke) {
		return failure(http.StatusBadGateway, err, true)
	}
	if w.status == 0 { // nothing written: an error, or an empty 200
		status := http.StatusOK
		if he, ok := errors.AsType[caddyhttp.HandlerError](err); ok && he.StatusCode != 0 {
			status = he.StatusCode
		} else if err != nil {
			status = http.StatusBadGateway
		}
		if err != nil {
			return failure(status, err, isTransient(status))
		}
		w.status = status
	}
	if w.status < 400 && e.delivered.Load() < length {
		// as on the plain path: an answer before the whole body was read
		// does not say the backend has the file
		return outcome{
			answer: madeUpAnswer(http.StatusBadGateway, "the backend answered before it read the whole upload; it was not delivered"),
			status: w.status,
			early:  true,
			err:    fmt.Errorf("the backend answered %d after reading %d of %d bytes", w.status, e.delivered.Load(), length),
		}
	}
	return outcome{answer: w.answer(), transient: isTransient(w.status)}
}

// errAnswerBroke is what serveNext returns when the next handler
// panicked: reverse_proxy does so (http.ErrAbortHandler) when the
// backend's answer breaks off after its headers.
var errAnswerBroke = errors.New("the backend's answer broke off")

// serveNext sends a delivery through the route's next handler. A panic
// there, which net/http would recover in a request's goroutine but
// nothing does in a background delivery, is logged once with its stack
// and returned as errAnswerBroke: the attempt counts as a transient
// failure.
func (s *Server) serveNext(rt *route, w http.ResponseWriter, req *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("delivery: the next handler panicked",
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("%w: %v", errAnswerBroke, v)
		}
	}()
	return rt.next.ServeHTTP(w, req)
}

// failure is the outcome of an attempt without an answer from the backend.
func failure(status int, err error, transient bool) outcome {
	return outcome{
		answer:    madeUpAnswer(status, fmt.Sprintf("the upload could not be delivered to the backend (%d)", status)),
		transient: transient,
		err:       err,
	}
}

// madeUpAnswer is the proxy's own answer to a delivery that has none
// from the backend to pass on: status and {"error": msg}.
func madeUpAnswer(status int, msg string) *answer {
	body, _ := jsonBody(map[string]string{"error": msg})
	return &answer{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body)}
}

// isTransient reports whether a delivery that got status is worth
// retrying.
func isTransient(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// deliveryBody is the body of the delivery request: the file as it is
// (raw), or wrapped in one-file multipart/form-data.
func (s *Server) deliveryBody(file io.Reader, info handler.FileInfo) (io.Reader, int64, string) {
	fileType := info.MetaData["filetype"]
	if fileType == "" {
		fileType = "application/octet-stream"
	}
	if s.cfg.DeliverAs != DeliverMultipart {
		return file, info.Size, fileType
	}
	filename := info.MetaData["filename"]
	if filename == "" {
		filename = "upload"
	}
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	part := make(textproto.MIMEHeader)
	part.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`,
		quoteEscaper.Replace(s.cfg.DeliverField), quoteEscaper.Replace(filename)))
	part.Set("Content-Type", fileType)
	_, _ = mw.CreatePart(part) // writes to a bytes.Buffer, which cannot fail
	tail := "\r\n--" + mw.Boundary() + "--\r\n"
	length := int64(head.Len()) + info.Size + int64(len(tail))
	return io.MultiReader(&head, file, strings.NewReader(tail)), length, mw.FormDataContentType()
}

var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"")

// deliveryRequest is the request that delivers the upload: deliver_method
// deliver_to, on the creation request's host and from its client, with
// its Authorization and Cookie headers, the upload ID and group, and each
// metadata entry as an Upload-Metadata-<key> header.
func (s *Server) deliveryRequest(ctx context.Context, rec *deliveryRecord, info handler.FileInfo, body io.Reader, length int64, contentType string) *http.Request {
	u := &url.URL{Path: s.cfg.DeliverTo}
	req := &http.Request{
		Method:        s.cfg.DeliverMethod,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header),
		Body:          io.NopCloser(body),
		ContentLength: length,
		Host:          rec.Host,
		RemoteAddr:    rec.RemoteAddr,
		RequestURI:    u.RequestURI(),
	}
	for name, values := range rec.Header {
		req.Header[name] = values
	}
	for key, value := range info.MetaData {
		req.Header.Set("Upload-Metadata-"+key, value)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Content-Length", strconv.FormatInt(length, 10))
	req.Header.Set(s.opts.IDHeader, rec.ID)
	if rec.Group != "" {
		req.Header.Set(groupHeader, rec.Group)
	}
	return req.WithContext(ctx)
}

// countingReader counts what the backend has read of the delivery.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
