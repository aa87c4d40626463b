package caddyprogress

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The public error phrases of a finished upload: short and fixed, one
// per cause, so that the status JSON, the events and the nginx report
// never carry internal detail (addresses, file paths, Go error chains).
// The full error goes to the log (serveUpload).
const (
	phraseUpstreamUnreachable = "upstream unreachable"                    // 502 dialling, 503 no upstream
	phraseUpstreamFailed      = "upstream connection failed"              // 502 after the connection was made
	phraseUpstreamTimedOut    = "upstream timed out"                      // 504
	phraseBodyTooLarge        = "request body too large"                  // 413 from request_body
	phraseClientGone          = "client went away"                        // aborted
	phraseClientTimedOut      = "client timed out"                        // aborted: Caddy's read timeouts
	phraseAnsweredEarly       = "upstream answered before the body ended" // an answer below 400 with the body unfinished
	phraseInternal            = "internal error"                          // the handler chain panicked
)

// phraseUpstreamAnswered is the phrase for an answer of 400 or above
// from the upstream itself, e.g. "upstream answered 500".
func phraseUpstreamAnswered(code int) string { return fmt.Sprintf("upstream answered %d", code) }

// phraseProxyAnswered is the phrase for an error status from a handler
// other than the upstream, e.g. "proxy answered 403".
func phraseProxyAnswered(code int) string { return fmt.Sprintf("proxy answered %d", code) }

// ending is what serveUpload saw of an upload's end.
type ending struct {
	written    int   // the status written to the client, 0 if none
	handlerErr error // what the next handler returned
	readErr    error // the body's first Read error other than io.EOF
	bodyEnded  bool  // every byte of the body was read
	clientGone bool  // the client's connection closed before the body ended, or its request was cancelled
}

// outcome tells how an upload ended: its final state, the status code
// to record (0 for none) and the public error phrase.
//
//	body ended, answer below 400                  complete
//	body ended, answer 400 or above               error, with the answer's phrase
//	body unfinished, client gone or read failed   aborted (client went away, client timed out)
//	body unfinished, 413 from request_body        error, request body too large
//	body unfinished, answer 400 or above          error, with the answer's phrase
//	body unfinished, answer below 400             error, upstream answered before the body ended
//	the client left before the answer (499)       aborted
//
// An upload is complete only when its whole body was read and the
// answer is below 400.
func outcome(e ending) (st state, code int, phrase string) {
	code = e.written
	he, isHandlerErr := errors.AsType[caddyhttp.HandlerError](e.handlerErr)
	if isHandlerErr && he.StatusCode != 0 {
		code = he.StatusCode
	} else if e.handlerErr != nil && code == 0 {
		code = http.StatusInternalServerError
	}

	if e.readErr != nil {
		if tooLarge(e.readErr) {
			return progress.StateError, http.StatusRequestEntityTooLarge, phraseBodyTooLarge
		}
		if ne, ok := errors.AsType[net.Error](e.readErr); ok && ne.Timeout() {
			return progress.StateAborted, 0, phraseClientTimedOut
		}
		return progress.StateAborted, 0, phraseClientGone
	}
	if (!e.bodyEnded && e.clientGone) || code == statusClientClosedRequest {
		return progress.StateAborted, 0, phraseClientGone
	}
	if code == 0 {
		code = http.StatusOK // nothing written: Caddy answers 200
	}
	switch {
	case code >= 400 && isHandlerErr:
		return progress.StateError, code, handlerErrorPhrase(code, e.handlerErr)
	case code >= 400 && e.handlerErr != nil:
		return progress.StateError, code, phraseProxyAnswered(code)
	case code >= 400:
		return progress.StateError, code, phraseUpstreamAnswered(code)
	case !e.bodyEnded:
		return progress.StateError, code, phraseAnsweredEarly
	}
	return progress.StateComplete, code, ""
}

// tooLarge reports whether a body read failed on a size limit
// (request_body's max_size).
func tooLarge(readErr error) bool {
	if he, ok := errors.AsType[caddyhttp.HandlerError](readErr); ok && he.StatusCode == http.StatusRequestEntityTooLarge {
		return true
	}
	_, ok := errors.AsType[*http.MaxBytesError](readErr)
	return ok
}

// handlerErrorPhrase names the cause of an error status that a handler
// returned (reverse_proxy's own 502, 503 and 504 among them).
func handlerErrorPhrase(code int, err error) string {
	switch code {
	case http.StatusBadGateway:
		if isDialError(err) {
			return phraseUpstreamUnreachable
		}
		return phraseUpstreamFailed
	case http.StatusServiceUnavailable:
		return phraseUpstreamUnreachable // e.g. no upstream available
	case http.StatusGatewayTimeout:
		return phraseUpstreamTimedOut
	case http.StatusRequestEntityTooLarge:
		return phraseBodyTooLarge
	}
	return phraseProxyAnswered(code)
}

// isDialError reports whether err is a failure to connect: refused,
// unroutable, or a name that does not resolve.
func isDialError(err error) bool {
	if _, ok := errors.AsType[reverseproxy.DialError](err); ok {
		return true
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "dial" {
		return true
	}
	_, ok := errors.AsType[*net.DNSError](err)
	return ok
}
