package progresscmd

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// statusDoc is the part of an upload's status JSON (the status route,
// every event) that send shows.
type statusDoc struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	Received       int64  `json:"received"`
	Total          *int64 `json:"total"`
	Speed          int64  `json:"speed"`
	Error          string `json:"error,omitempty"`
	UpstreamStatus *int   `json:"upstream_status"`
}

// progressRoutes are the proxy's progress routes for the uploads of one
// send: the events route, and the status route to poll when the events
// route cannot be used.
type progressRoutes struct {
	client *http.Client
	status *url.URL // e.g. http://localhost:8080/upload/status/
	events *url.URL // e.g. http://localhost:8080/upload/events/
}

// pollEvery is how often the status route is asked when it is polled.
const pollEvery = 250 * time.Millisecond

// follow calls update with each status of upload id that the proxy
// reports, until a final one (complete, error, aborted), which it
// returns, or until ctx ends. It reads the events route, and polls the
// status route when there is no event stream (the route is off, or
// answers something else), or between reconnections.
func (p *progressRoutes) follow(ctx context.Context, id, token string, update func(statusDoc)) (statusDoc, bool) {
	useEvents := p.events != nil
	for ctx.Err() == nil {
		if useEvents {
			final, ok, streamed := p.stream(ctx, id, token, update)
			if ok {
				return final, true
			}
			useEvents = streamed // a stream that broke is tried again; a route that gave none is not
		}
		s, err := p.get(ctx, id, token)
		if err == nil && s.Status != "unknown" && s.Status != "" {
			update(s)
			if finalStates[s.Status] {
				return s, true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollEvery):
		}
	}
	return statusDoc{}, false
}

// stream reads the upload's event stream until its final event (ok), or
// until it breaks; streamed says whether an event stream was answered.
func (p *progressRoutes) stream(ctx context.Context, id, token string, update func(statusDoc)) (final statusDoc, ok, streamed bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.events.JoinPath(id).String(), nil)
	if err != nil {
		return statusDoc{}, false, false
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return statusDoc{}, false, true // the proxy may be restarting: try again
	}
	defer resp.Body.Close()
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mediaType != "text/event-stream" {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return statusDoc{}, false, false
	}
	// Server-sent events: "event:" names a final event, "data:" carries
	// the status, a blank line ends an event.
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var data strings.Builder
	for lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case line == "" && data.Len() > 0:
			var s statusDoc
			err := json.Unmarshal([]byte(data.String()), &s)
			data.Reset()
			if err != nil || s.Status == "unknown" {
				continue
			}
			update(s)
			if finalStates[s.Status] {
				return s, true, true
			}
		}
	}
	return statusDoc{}, false, true
}

// get reads the upload's status from the status route.
func (p *progressRoutes) get(ctx context.Context, id, token string) (statusDoc, error) {
	var s statusDoc
	if p.status == nil {
		return s, context.Canceled
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.status.JoinPath(id).String(), nil)
	if err != nil {
		return s, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&s)
	return s, err
}
