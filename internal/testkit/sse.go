package testkit

import (
	"bufio"
	"io"
	"strings"
)

// Event is one Server-Sent Event as a client receives it: Name is ""
// for an unnamed event.
type Event struct {
	Name, ID, Data string
}

// ReadEvents parses the text/event-stream r, handing each event that
// has data to each, in order, until r ends or each returns false. Lines
// may be up to maxLine bytes (a status with many files is long). It
// returns the stream's last "retry:" value and the error that ended the
// reading (nil at the end of r).
func ReadEvents(r io.Reader, maxLine int, each func(Event) bool) (retry string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var ev Event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Data != "" && !each(ev) {
				return retry, nil
			}
			ev = Event{}
		case strings.HasPrefix(line, "retry: "):
			retry = strings.TrimPrefix(line, "retry: ")
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.Data = strings.TrimPrefix(line, "data: ")
		}
	}
	return retry, sc.Err()
}
