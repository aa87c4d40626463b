package progresscmd

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// The tus 1.0 core protocol with its creation extension, as much of it as
// send needs: create an upload (POST), ask its offset (HEAD), send the
// rest (PATCH). No Go tus client module could be had when this was
// written, and tusd's packages are the server side only; these three
// requests are the whole client side of what send does.
//
// With status_access token, the proxy answers the creation with the
// upload's token (X-Upload-Token) and takes every later request on the
// upload only with it: HEAD and PATCH show it in X-Upload-Token (which
// leaves Authorization to the backend), and the token is kept with the
// upload's URL, so that a new run can go on.
const tusVersion = "1.0.0"

// tusClient talks to one tus endpoint.
type tusClient struct {
	client     *http.Client
	endpoint   *url.URL    // the creation URL, e.g. http://localhost:8080/files/
	header     http.Header // -H headers, on every request
	group      string      // X-Upload-Group of the creation request, if any
	groupToken string      // X-Upload-Group-Token of the creation request, if any
}

// tusUpload is an upload the endpoint created.
type tusUpload struct {
	URL   string `json:"url"`             // its URL, from Location
	ID    string `json:"id"`              // its progress ID (X-Upload-ID)
	Token string `json:"token,omitempty"` // its progress token, with status_access token

	// The group it was created in (--new-group), and its token, so that
	// a new run goes on in that group rather than reserve another.
	Group      string `json:"group,omitempty"`
	GroupToken string `json:"group_token,omitempty"`
}

// errNoUpload says the endpoint no longer has the upload (404, 410).
var errNoUpload = fmt.Errorf("the upload is gone")

// refusal is a 4xx answer to the creation: trying again would not help.
type refusal struct{ answer answer }

func (r *refusal) Error() string { return "the proxy refused the upload: " + r.answer.Status }

// answer is an HTTP answer: the backend's, or the proxy's refusal.
type answer struct {
	Code   int
	Status string
	Header http.Header
	Body   []byte
}

// request makes a tus request; token is the upload's token, for a
// request on an existing upload ("" for the creation, or without one).
func (c *tusClient) request(ctx context.Context, method, target, token string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	if token != "" {
		req.Header.Set(uploadTokenHeader, token)
	}
	return req, nil
}

// The request headers that show an upload's and a group's token.
const (
	uploadTokenHeader = "X-Upload-Token"
	groupTokenHeader  = "X-Upload-Group-Token"
)

// create makes an upload of size bytes named filename.
func (c *tusClient) create(ctx context.Context, filename string, size int64) (tusUpload, error) {
	req, err := c.request(ctx, http.MethodPost, c.endpoint.String(), "", nil)
	if err != nil {
		return tusUpload{}, err
	}
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	if c.group != "" {
		req.Header.Set("X-Upload-Group", c.group)
	}
	if c.groupToken != "" {
		req.Header.Set(groupTokenHeader, c.groupToken)
	}
	req.Header.Set("Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte(filename))+
		",filetype "+base64.StdEncoding.EncodeToString([]byte("application/octet-stream")))
	resp, err := c.client.Do(req)
	if err != nil {
		return tusUpload{}, fmt.Errorf("creating the upload: %v", err)
	}
	a := readAnswer(resp)
	switch {
	case a.Code >= 400 && a.Code < 500:
		return tusUpload{}, &refusal{a}
	case a.Code != http.StatusCreated:
		return tusUpload{}, fmt.Errorf("creating the upload: %s: %s", a.Status, strings.TrimSpace(string(a.Body)))
	}
	loc, err := c.endpoint.Parse(a.Header.Get("Location"))
	if err != nil || a.Header.Get("Location") == "" {
		return tusUpload{}, fmt.Errorf("creating the upload: the answer has no usable Location")
	}
	id := a.Header.Get("X-Upload-Id")
	if id == "" {
		id = path.Base(loc.Path)
	}
	return tusUpload{URL: loc.String(), ID: id, Token: a.Header.Get(uploadTokenHeader), Group: c.group, GroupToken: c.groupToken}, nil
}

// offset asks how many bytes of the upload the endpoint has. While it
// delivers the upload (423), it waits and asks again.
func (c *tusClient) offset(ctx context.Context, u tusUpload) (int64, error) {
	for {
		req, err := c.request(ctx, http.MethodHead, u.URL, u.Token, nil)
		if err != nil {
			return 0, err
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("asking the upload's offset: %v", err)
		}
		a := readAnswer(resp)
		switch a.Code {
		case http.StatusOK, http.StatusNoContent:
			n, err := strconv.ParseInt(a.Header.Get("Upload-Offset"), 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("asking the upload's offset: the answer has no valid Upload-Offset")
			}
			return n, nil
		case http.StatusNotFound, http.StatusGone, http.StatusForbidden:
			return 0, errNoUpload
		case http.StatusLocked:
			if err := sleep(ctx, retryAfter(a)); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("asking the upload's offset: %s", a.Status)
		}
	}
}

// patch sends the upload's bytes from offset on (body holds them). Its
// answer, to the request that carries the last byte, is the backend's.
func (c *tusClient) patch(ctx context.Context, u tusUpload, offset, length int64, body io.Reader) (answer, error) {
	req, err := c.request(ctx, http.MethodPatch, u.URL, u.Token, body)
	if err != nil {
		return answer{}, err
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err := c.client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("sending the upload's bytes: %v", err)
	}
	return readAnswer(resp), nil
}

// readAnswer reads up to 1 MiB of an answer's body and closes it.
func readAnswer(resp *http.Response) answer {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return answer{Code: resp.StatusCode, Status: resp.Status, Header: resp.Header, Body: body}
}

// retryAfter is the answer's Retry-After in seconds, 1 s without one,
// at most 30 s.
func retryAfter(a answer) time.Duration {
	n, err := strconv.Atoi(a.Header.Get("Retry-After"))
	if err != nil || n < 1 {
		return time.Second
	}
	return min(time.Duration(n)*time.Second, 30*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
