package progresscmd

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/dustin/go-humanize"
	"github.com/muesli/termenv"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"golang.org/x/time/rate"
)

func sendCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send FILE... --to <url> [--resumable] [--rate <size>] [--new-group | --group <id> [--group-token <token>]] [--token <token>] [-H 'Field: value']",
		Short: "Uploads files through the proxy, with the proxy's progress",
		Long: `
Uploads each FILE through the proxy and shows its progress as the proxy
counts it (the events route, else polling the status route): one bar per
file and one for all. Then prints each upload's outcome and the backend's
answer, and exits non-zero when an upload ended in error or was aborted.

--to is where the files go: the upload URL (e.g.
http://localhost:8080/upload; each file is the raw body of one POST),
or with --resumable the resumable (tus) endpoint (e.g.
http://localhost:8080/files/). A resumable upload's URL is kept in the
user's cache folder until it ends: run the same command again after
Ctrl-C, a dropped connection or a proxy restart, and it goes on from
the proxy's offset.

--status and --events are the proxy's progress routes, as paths on the
--to host (the module's defaults), or full URLs; "off" for none.
--token shows a progress token (status_access token) when the proxy's
reservation or answer gives none. --rate caps the bytes per second of
all files together.

--new-group makes the files members of a new group: send reserves it
(POST <status route>?group), which gives an ID nobody can guess and,
with status_access token, the group's token, shows both with each
upload, and prints them first ("group <id>", "group token <token>"):
read the group's progress at <status route>?group=<id>, with the token.
With --resumable, a run that goes on with uploads of an earlier run
goes on in their group.
--group <id> joins a group of that ID instead; with status_access token
an upload joins a group only if it shows the group's token, so give it
with --group-token (send refuses to start without it when the proxy
says it is in token mode).
`,
		Args: cobra.MinimumNArgs(1),
	}
	flags := cmd.Flags()
	to := flags.String("to", "", "the upload URL, or with --resumable the resumable endpoint (required)")
	resumable := flags.Bool("resumable", false, "upload through the resumable (tus) endpoint, resuming an earlier run")
	rateFlag := flags.String("rate", "", "bytes per second for all files together, e.g. 1MiB (default no limit)")
	group := flags.String("group", "", "make the uploads members of this group (X-Upload-Group)")
	groupToken := flags.String("group-token", "", "the token of the --group (X-Upload-Group-Token), with status_access token")
	newGroup := flags.Bool("new-group", false, "reserve a new group and make the uploads its members; prints its ID and token")
	token := flags.String("token", "", "the progress token to show the status and events routes")
	headers := flags.StringArrayP("header", "H", nil, "a request header for the uploads, \"Field: value\" (repeatable)")
	statusPath := flags.String("status", "/upload/status/", "the proxy's status route, or off")
	eventsPath := flags.String("events", "/upload/events/", "the proxy's events route, or off")
	parallel := flags.Int("parallel", 3, "files sent at once")
	cmd.RunE = func(cmd *cobra.Command, files []string) error {
		o, err := newSendOptions(*to, *resumable, *rateFlag, *group, *token, *headers, *statusPath, *eventsPath)
		if err != nil {
			return err
		}
		if *parallel < 1 {
			return fmt.Errorf("--parallel %d: at least 1", *parallel)
		}
		jobs, err := openJobs(files)
		if err != nil {
			return err
		}
		if err := o.setGroup(cmd.Context(), jobs, *newGroup, *groupToken); err != nil {
			return err
		}
		return o.run(cmd.Context(), jobs, *parallel)
	}
	return cmd
}

// sendOptions is what every upload of one send shares.
type sendOptions struct {
	to         *url.URL
	resumable  bool
	group      string // X-Upload-Group of each upload
	groupToken string // X-Upload-Group-Token of each upload
	newGroup   bool   // the group is one send reserved (--new-group)
	token      string
	header     http.Header
	limiter    *rate.Limiter // nil without --rate
	client     *http.Client
	routes     progressRoutes
	store      resumeStore
}

func newSendOptions(to string, resumable bool, rateFlag, group, token string, headers []string, statusPath, eventsPath string) (*sendOptions, error) {
	if to == "" {
		return nil, fmt.Errorf("--to is required: the upload URL, e.g. http://localhost:8080/upload")
	}
	target, err := url.Parse(to)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("--to %q is not an http:// or https:// URL", to)
	}
	o := &sendOptions{to: target, resumable: resumable, group: group, token: token, header: make(http.Header), client: &http.Client{}}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("-H %q is not a header: use \"Field: value\"", h)
		}
		o.header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if rateFlag != "" {
		n, err := humanize.ParseBytes(rateFlag)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--rate %q is not a size per second such as 500KB or 1MiB", rateFlag)
		}
		burst := int(max(min(n/10, 1<<20), 1024))
		o.limiter = rate.NewLimiter(rate.Limit(n), burst)
	}
	o.routes = progressRoutes{client: o.client}
	if o.routes.status, err = route(target, statusPath, "--status"); err != nil {
		return nil, err
	}
	if o.routes.events, err = route(target, eventsPath, "--events"); err != nil {
		return nil, err
	}
	if resumable {
		if o.store, err = newResumeStore(); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// route resolves a progress route against the --to URL; nil for "off".
func route(to *url.URL, value, flag string) (*url.URL, error) {
	if value == "off" {
		return nil, nil
	}
	u, err := to.Parse(value)
	if err != nil || !strings.HasSuffix(u.Path, "/") {
		return nil, fmt.Errorf("%s %q is not a route prefix such as /upload/status/ (ending in /), a URL, or off", flag, value)
	}
	u.RawQuery = ""
	return u, nil
}

// fileJob is one file to send.
type fileJob struct {
	index int
	path  string
	name  string
	info  os.FileInfo
}

func openJobs(files []string) ([]fileJob, error) {
	jobs := make([]fileJob, 0, len(files))
	for i, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f, errors.Unwrap(err))
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", f)
		}
		jobs = append(jobs, fileJob{index: i, path: f, name: filepath.Base(f), info: info})
	}
	return jobs, nil
}

// outcome is how one file's upload ended.
type outcome struct {
	state  string  // complete, error, aborted, or interrupted (stopped here; resumable: run again)
	reason string  // why, for anything but complete
	answer *answer // the backend's answer (or the proxy's refusal), when one came
}

// Messages from the uploads to the view.
type (
	fileStatus struct {
		index  int
		status statusDoc
	}
	fileNote struct {
		index int
		note  string
	}
	fileDone struct {
		index   int
		outcome outcome
	}
)

// run sends the files, parallel at a time, shows their progress, then
// prints their outcomes.
func (o *sendOptions) run(parent context.Context, jobs []fileJob, parallel int) error {
	ctx, cancel := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	tty := term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stdin.Fd()))
	o.printGroup(os.Stdout)

	var report func(tea.Msg)
	var program *tea.Program
	if tty {
		m := newSendModel(jobs, cancel, newPalette(termenv.NewOutput(os.Stdout).EnvColorProfile()))
		program = tea.NewProgram(m, tea.WithContext(parent))
		report = program.Send
	} else {
		report = plainReporter(jobs)
	}

	outcomes := make([]outcome, len(jobs))
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	for _, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					outcomes[job.index] = outcome{state: "error", reason: fmt.Sprintf("internal error: %v\n%s", r, debug.Stack())}
					report(fileDone{job.index, outcomes[job.index]})
				}
			}()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				outcomes[job.index] = outcome{state: "interrupted", reason: "not started"}
				report(fileDone{job.index, outcomes[job.index]})
				return
			}
			var out outcome
			if o.resumable {
				out = o.sendResumable(ctx, job, report)
			} else {
				out = o.sendPlain(ctx, job, report)
			}
			outcomes[job.index] = out
			report(fileDone{job.index, out})
		}()
	}
	if program != nil {
		go func() { wg.Wait(); program.Send(allDone{}) }()
		if _, err := program.Run(); err != nil && !errors.Is(err, tea.ErrProgramKilled) {
			cancel()
			wg.Wait()
			return err
		}
	}
	wg.Wait()
	return printOutcomes(os.Stdout, jobs, outcomes)
}

// printOutcomes prints each file's outcome and answer, and returns an
// error when one did not complete.
func printOutcomes(w io.Writer, jobs []fileJob, outcomes []outcome) error {
	var failed []string
	for i, out := range outcomes {
		line := jobs[i].name + ": " + out.state
		if out.answer != nil {
			line += " · " + out.answer.Status
		}
		if out.reason != "" {
			line += " · " + out.reason
		}
		fmt.Fprintln(w, printable(line, true))
		if out.answer != nil && len(out.answer.Body) > 0 {
			fmt.Fprintln(w, printable(strings.TrimRight(string(out.answer.Body), "\n"), true))
		}
		if out.state != "complete" {
			failed = append(failed, printable(fmt.Sprintf("%s %s (%s)", jobs[i].name, out.state, out.reason), false))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d uploads did not complete: %s", len(failed), len(outcomes), strings.Join(failed, "; "))
}

// plainReporter prints notes and outcomes as lines, for an output that
// is not a terminal.
func plainReporter(jobs []fileJob) func(tea.Msg) {
	var mu sync.Mutex
	return func(msg tea.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch msg := msg.(type) {
		case fileNote:
			fmt.Fprintf(os.Stderr, "%s: %s\n", jobs[msg.index].name, msg.note)
		case fileDone:
			fmt.Fprintf(os.Stderr, "%s: %s\n", jobs[msg.index].name, msg.outcome.state)
		}
	}
}

// throttled caps the reads of r at the send's --rate.
func (o *sendOptions) throttled(ctx context.Context, r io.Reader) io.Reader {
	if o.limiter == nil {
		return r
	}
	return &throttledReader{ctx: ctx, r: r, limiter: o.limiter}
}

type throttledReader struct {
	ctx     context.Context
	r       io.Reader
	limiter *rate.Limiter
}

func (t *throttledReader) Read(p []byte) (int, error) {
	if len(p) > t.limiter.Burst() {
		p = p[:t.limiter.Burst()]
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if werr := t.limiter.WaitN(t.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// reserve asks the status route for a fresh upload ID (and its token);
// without one (the route is off or refuses), it makes an ID itself.
func (o *sendOptions) reserve(ctx context.Context) (id, token string) {
	if o.routes.status != nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.routes.status.String(), nil)
		if err == nil {
			if resp, err := o.client.Do(req); err == nil {
				a := readAnswer(resp)
				var r struct {
					ID    string `json:"id"`
					Token string `json:"token"`
				}
				if a.Code == http.StatusCreated && json.Unmarshal(a.Body, &r) == nil && r.ID != "" {
					return r.ID, r.Token
				}
			}
		}
	}
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b), ""
}

// following follows an upload's progress in the background; final
// gives its final status once the proxy reports it.
type following struct {
	stop  context.CancelFunc
	done  chan struct{}
	final statusDoc
	ok    bool
	panic string // a panic while following, with its stack
}

func (o *sendOptions) follow(ctx context.Context, job fileJob, id, token string, report func(tea.Msg)) *following {
	ctx, stop := context.WithCancel(ctx)
	f := &following{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer func() {
			// a panic must not end the send: the outcome then comes from
			// the answer, and says what happened
			if r := recover(); r != nil {
				f.panic = fmt.Sprintf("internal error while following the progress: %v\n%s", r, debug.Stack())
			}
		}()
		f.final, f.ok = o.routes.follow(ctx, id, cmpToken(token, o.token), func(s statusDoc) {
			report(fileStatus{job.index, s})
		})
	}()
	return f
}

// wait waits up to d for the final status, then stops following.
func (f *following) wait(d time.Duration) (statusDoc, bool) {
	select {
	case <-f.done:
	case <-time.After(d):
	}
	f.stop()
	<-f.done
	if f.panic != "" {
		fmt.Fprintln(os.Stderr, f.panic)
	}
	return f.final, f.ok
}

func cmpToken(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// finalWait is how long send waits, after the answer, for the proxy's
// final status of the upload.
const finalWait = 10 * time.Second

// sendPlain sends the file as the body of one POST to --to.
func (o *sendOptions) sendPlain(ctx context.Context, job fileJob, report func(tea.Msg)) outcome {
	id, token := o.reserve(ctx)
	f, err := os.Open(job.path)
	if err != nil {
		return outcome{state: "error", reason: err.Error()}
	}
	defer f.Close()
	progress := o.follow(ctx, job, id, token, report)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.to.String(), o.throttled(ctx, f))
	if err != nil {
		progress.wait(0)
		return outcome{state: "error", reason: err.Error()}
	}
	for k, v := range o.header {
		req.Header[k] = v
	}
	req.ContentLength = job.info.Size()
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("X-Upload-ID", id)
	if token != "" {
		// with status_access token, the upload keeps the reserved ID only
		// if it shows the ID's token
		req.Header.Set(uploadTokenHeader, token)
	}
	if o.group != "" {
		req.Header.Set("X-Upload-Group", o.group)
	}
	if o.groupToken != "" {
		req.Header.Set(groupTokenHeader, o.groupToken)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		final, ok := progress.wait(time.Second)
		if ok && final.Status != "complete" {
			return outcome{state: final.Status, reason: final.Error}
		}
		if ctx.Err() != nil {
			return outcome{state: "interrupted", reason: "stopped before the answer"}
		}
		return outcome{state: "error", reason: err.Error()}
	}
	a := readAnswer(resp)
	final, ok := progress.wait(finalWait)
	return outcomeOf(final, ok, &a)
}

// outcomeOf is the outcome from the proxy's final status, or from the
// answer when the proxy gave none.
func outcomeOf(final statusDoc, ok bool, a *answer) outcome {
	switch {
	case ok:
		return outcome{state: final.Status, reason: final.Error, answer: a}
	case a != nil && a.Code < 400:
		return outcome{state: "complete", answer: a}
	case a != nil:
		return outcome{state: "error", reason: "answered " + a.Status, answer: a}
	default:
		return outcome{state: "error", reason: "no answer"}
	}
}

// maxAttempts is how many times in a row a resumable upload's request
// may fail to connect before send gives up (and a new run goes on).
const maxAttempts = 8

// sendResumable sends the file through the tus endpoint at --to, from
// where an earlier run stopped.
func (o *sendOptions) sendResumable(ctx context.Context, job fileJob, report func(tea.Msg)) outcome {
	tus := &tusClient{client: o.client, endpoint: o.to, header: o.header, group: o.group, groupToken: o.groupToken}
	key := fingerprint(job.path, job.info, o.to.String())
	u, offset, stopped := o.startOrResume(ctx, tus, key, job, report)
	if stopped != nil {
		return *stopped
	}
	f, err := os.Open(job.path)
	if err != nil {
		return outcome{state: "error", reason: err.Error()}
	}
	defer f.Close()
	progress := o.follow(ctx, job, u.ID, u.Token, report)
	return o.patchUntilAnswered(ctx, tus, u, key, f, offset, job.info.Size(), progress)
}

// startOrResume finds the upload an earlier run of the same file left
// (under key) and its offset, or creates one; stopped is the outcome
// when neither can be done.
func (o *sendOptions) startOrResume(ctx context.Context, tus *tusClient, key string, job fileJob, report func(tea.Msg)) (u tusUpload, offset int64, stopped *outcome) {
	length := job.info.Size()
	u, resuming := o.store.load(key)
	if resuming {
		n, err := tus.offset(ctx, u)
		switch {
		case errors.Is(err, errNoUpload):
			o.store.forget(key)
			report(fileNote{job.index, "the proxy no longer has the earlier upload: starting again"})
		case err != nil:
			out := interrupted(ctx, err)
			return u, 0, &out
		default:
			report(fileNote{job.index, fmt.Sprintf("resuming at %s of %s", size(n), size(length))})
			return u, n, nil
		}
	}
	created, err := tus.create(ctx, job.name, length)
	var refused *refusal
	if errors.As(err, &refused) {
		return u, 0, &outcome{state: "error", reason: refused.Error(), answer: &refused.answer}
	}
	if err != nil {
		out := interrupted(ctx, err)
		return u, 0, &out
	}
	if err := o.store.save(key, created); err != nil {
		return u, 0, &outcome{state: "error", reason: err.Error()}
	}
	return created, 0, nil
}

// patchUntilAnswered sends f's bytes from offset to length, going on
// from the proxy's offset after each failure (up to maxAttempts in a
// row), until the proxy answers the last PATCH (with the backend's
// answer, or a refusal) or the upload is gone; progress gives the
// proxy's final status. The upload is forgotten (key) once it ended;
// its outcome is "interrupted" when a new run could go on.
func (o *sendOptions) patchUntilAnswered(ctx context.Context, tus *tusClient, u tusUpload, key string, f *os.File, offset, length int64, progress *following) outcome {
	for failures := 0; ; {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			progress.wait(0)
			return outcome{state: "error", reason: err.Error()}
		}
		a, err := tus.patch(ctx, u, offset, length-offset, o.throttled(ctx, io.LimitReader(f, length-offset)))
		if err == nil {
			failures = 0
			switch a.Code {
			case http.StatusConflict, http.StatusLocked, http.StatusServiceUnavailable:
				// another offset, or the delivery runs or is retried: ask again
				if err = sleep(ctx, retryAfter(a)); err == nil {
					offset, err = tus.offset(ctx, u)
				}
			case http.StatusNotFound, http.StatusGone:
				err = errNoUpload
			default: // the backend's answer, or a refusal
				final, ok := progress.wait(finalWait)
				o.store.forget(key)
				return outcomeOf(final, ok, &a)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, errNoUpload):
			final, ok := progress.wait(finalWait)
			o.store.forget(key)
			if ok {
				return outcome{state: final.Status, reason: final.Error}
			}
			return outcome{state: "error", reason: "the proxy no longer has the upload"}
		case ctx.Err() != nil:
			progress.wait(0)
			return outcome{state: "interrupted", reason: "run the same command again to resume"}
		default:
			failures++
			if failures >= maxAttempts {
				progress.wait(0)
				return outcome{state: "interrupted", reason: err.Error() + "; run the same command again to resume"}
			}
			if sleep(ctx, time.Duration(failures)*time.Second) == nil {
				if n, err := tus.offset(ctx, u); err == nil {
					offset = n
				}
			}
		}
	}
}

// interrupted is the outcome of a resumable upload stopped by err.
func interrupted(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return outcome{state: "interrupted", reason: "run the same command again to resume"}
	}
	return outcome{state: "interrupted", reason: err.Error() + "; run the same command again to resume"}
}
