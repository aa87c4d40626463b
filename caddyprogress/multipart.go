package caddyprogress

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// maxBoundary is the longest boundary RFC 2046 allows.
const maxBoundary = 70

// scanState is where a multipartObserver is in the body.
type scanState uint8

const (
	scanSearch     scanState = iota // looking for the delimiter: in the preamble, or in a part's content
	scanAfterDelim                  // the delimiter matched: "--", padding or CRLF must follow
	scanCloseDash                   // "-" after the delimiter: a second one closes the body
	scanPadding                     // spaces or tabs after the delimiter, before its CRLF
	scanLineCR                      // CR after the delimiter: LF must follow
	scanHeader                      // reading a part's header block, up to an empty line
	scanEpilogue                    // after the closing delimiter: nothing more to see
	scanGaveUp                      // not usable multipart: the upload is tracked as a whole
)

// multipartObserver follows a multipart/form-data body as it streams by,
// chunk by chunk, and reports each part's progress in a partList. It is
// an incremental boundary scanner (RFC 2046): it never holds on to body
// bytes, never reads on its own, and never changes what it is shown, so
// it cannot delay or alter the upload. A delimiter split across two
// chunks is matched across them; the few bytes of a partial match are
// counted to the part once they turn out to be content.
//
// Only the goroutine reading the body calls observe and bodyEnded. When
// the body does not follow the format, or goes past maxParts parts or
// maxHeaderBlock bytes of one part's headers, the observer gives up: it
// logs that once at debug level, drops the parts, and stops looking.
type multipartObserver struct {
	delim  []byte // "\r\n--" + boundary; the boundary has no CR or LF
	parts  *partList
	logger *zap.Logger // for the one line logged when it gives up
	id     string      // the upload's ID, for that line

	state   scanState
	matched int    // bytes of delim matched so far
	held    int64  // bytes that are content unless they complete a delimiter
	pending int64  // content bytes of cur not yet added to it
	cur     *part  // the part whose content is being read; nil in the preamble
	header  []byte // the current part's header block so far
	hasText bool   // the current header line has something besides CR
}

// newMultipartObserver returns an observer of a body with the given
// boundary, or an error when the boundary cannot be used.
//
// A boundary with CR or LF is refused (RFC 2046 allows neither): without
// them, the delimiter's only CR is its first byte, so a partial match that
// fails never hides the start of another one, and the scanner never needs
// to look back.
func newMultipartObserver(boundary string, parts *partList, logger *zap.Logger, id string) (*multipartObserver, error) {
	switch {
	case boundary == "":
		return nil, fmt.Errorf("no boundary")
	case len(boundary) > maxBoundary:
		return nil, fmt.Errorf("the boundary is %d characters long; at most %d are allowed", len(boundary), maxBoundary)
	case strings.ContainsAny(boundary, "\r\n"):
		return nil, fmt.Errorf("the boundary has a CR or LF")
	}
	o := &multipartObserver{
		delim:  []byte("\r\n--" + boundary),
		parts:  parts,
		logger: logger,
		id:     id,
		header: make([]byte, 0, 512),
	}
	// The first boundary line may start the body: begin as if the CRLF
	// before it had been seen. Those two bytes count toward nothing.
	o.matched = 2
	return o, nil
}

// observeMultipart returns an observer of r's body that reports the parts
// in u, or nil when r is not multipart/form-data or has no usable
// boundary. It is set up once per request, before the body is read.
func (h *Handler) observeMultipart(r *http.Request, u *upload) *multipartObserver {
	contentType := r.Header.Get("Content-Type")
	const prefix = "multipart/"
	if len(contentType) < len(prefix) || !strings.EqualFold(contentType[:len(prefix)], prefix) {
		return nil // not worth parsing
	}
	mediaType, params, _ := mime.ParseMediaType(contentType)
	if mediaType != "multipart/form-data" {
		return nil
	}
	if u.withoutFiles {
		h.logger.Debug("not following the parts of a multipart upload: max_memory is nearly taken",
			zap.String("id", u.id))
		return nil
	}
	parts := newPartList(u.tracker)
	o, err := newMultipartObserver(params["boundary"], parts, h.logger, u.id)
	if err != nil {
		h.logger.Debug("not following the parts of a multipart upload; tracking it as a whole",
			zap.String("id", u.id), zap.String("reason", err.Error()))
		return nil
	}
	u.parts.Store(parts)
	return o
}

// observe follows the body through the next chunk of it, p, exactly as
// the reader got it.
func (o *multipartObserver) observe(p []byte) {
	n := len(p)
	for len(p) > 0 {
		switch o.state {
		case scanSearch:
			p = o.search(p)
		case scanHeader:
			p = o.readHeader(p)
		case scanEpilogue, scanGaveUp:
			p = nil
		default:
			if o.afterDelim(p[0]) {
				p = p[1:]
			}
		}
	}
	o.flush()
	o.parts.observed.Add(int64(n))
}

// bodyEnded is called when the whole body has been read. A body that
// ends before its closing delimiter is not usable multipart.
func (o *multipartObserver) bodyEnded() {
	switch o.state {
	case scanEpilogue, scanGaveUp:
		return
	}
	o.giveUp("the body ended before its closing boundary")
}

// search looks for the delimiter in p, counting what is not part of it
// as content, and returns what follows a complete delimiter.
func (o *multipartObserver) search(p []byte) []byte {
	for len(p) > 0 {
		if o.matched == 0 {
			// only CR can start the delimiter (the boundary has none)
			i := bytes.IndexByte(p, '\r')
			if i < 0 {
				o.content(int64(len(p)))
				return nil
			}
			o.content(int64(i))
			p = p[i:]
		}
		for len(p) > 0 && o.matched < len(o.delim) {
			if p[0] != o.delim[o.matched] {
				o.notDelim() // p[0] is looked at again from the start
				break
			}
			o.matched++
			o.held++
			p = p[1:]
		}
		if o.matched == len(o.delim) {
			o.state = scanAfterDelim
			return p
		}
	}
	return nil
}

// afterDelim takes one byte after a complete delimiter, and reports
// whether it used it. A byte it does not use means the delimiter was
// content after all (as in "--boundaryX"), to be looked at again.
func (o *multipartObserver) afterDelim(c byte) bool {
	switch {
	case o.state == scanAfterDelim && c == '-':
		o.state = scanCloseDash
	case o.state == scanCloseDash && c == '-':
		o.endPart()
		o.state = scanEpilogue
		return true
	case (o.state == scanAfterDelim || o.state == scanPadding) && (c == ' ' || c == '\t'):
		o.state = scanPadding
	case (o.state == scanAfterDelim || o.state == scanPadding) && c == '\r':
		o.state = scanLineCR
	case o.state == scanLineCR && c == '\n':
		o.endPart()
		o.state = scanHeader
		return true
	default:
		o.notDelim()
		return false
	}
	o.held++
	return true
}

// notDelim turns the bytes held as a possible delimiter into content and
// goes back to searching.
func (o *multipartObserver) notDelim() {
	o.content(o.held)
	o.held = 0
	o.matched = 0
	o.state = scanSearch
}

// content counts n bytes of the current part's content; in the preamble
// they count toward nothing.
func (o *multipartObserver) content(n int64) {
	if o.cur != nil {
		o.pending += n
	}
}

// flush adds the content counted so far to the current part.
func (o *multipartObserver) flush() {
	if o.cur != nil && o.pending > 0 {
		o.cur.received.Add(o.pending)
	}
	o.pending = 0
}

// endPart completes the current part (if any) at a confirmed delimiter.
func (o *multipartObserver) endPart() {
	o.flush()
	if o.cur != nil {
		o.cur.complete.Store(true)
		o.cur = nil
	}
	o.held = 0
	o.matched = 0
}

// readHeader collects a part's header block up to its empty line, and
// returns what follows it.
func (o *multipartObserver) readHeader(p []byte) []byte {
	for len(p) > 0 {
		line := p
		i := bytes.IndexByte(p, '\n')
		if i >= 0 {
			line = p[:i+1]
		}
		if len(o.header)+len(line) > maxHeaderBlock {
			o.giveUp(fmt.Sprintf("a part's header block is longer than %d bytes", maxHeaderBlock))
			return nil
		}
		o.header = append(o.header, line...)
		if !o.hasText && len(bytes.Trim(line, "\r\n")) > 0 {
			o.hasText = true
		}
		if i < 0 {
			return nil
		}
		p = p[i+1:]
		if !o.hasText { // an empty line ends the header block
			o.startPart()
			return p
		}
		o.hasText = false
	}
	return nil
}

// startPart begins a part from the header block just read.
func (o *multipartObserver) startPart() {
	field, filename := partNames(o.header)
	o.header = o.header[:0]
	o.hasText = false
	p, err := o.parts.add(field, filename)
	if err != nil {
		o.giveUp(err.Error())
		return
	}
	o.cur = p
	o.state = scanSearch
}

// giveUp stops following the parts: the upload is tracked as a whole.
func (o *multipartObserver) giveUp(reason string) {
	o.state = scanGaveUp
	o.cur = nil
	o.header = nil
	o.parts.giveUp()
	o.logger.Debug("not following the parts of a multipart upload any more; tracking it as a whole",
		zap.String("id", o.id), zap.String("reason", reason))
}

// partNames finds the field name and file name in a part's header block
// (its Content-Disposition), cleaned for display. filename is nil when
// the part has none (a plain form field).
func partNames(block []byte) (field string, filename *string) {
	for line := range strings.Lines(string(block)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "Content-Disposition") {
			continue
		}
		_, params, err := mime.ParseMediaType(strings.TrimSpace(value))
		if err != nil {
			return "", nil
		}
		field = cleanName(params["name"])
		if f, ok := params["filename"]; ok {
			f = cleanName(f)
			filename = &f
		}
		return field, filename
	}
	return "", nil
}
