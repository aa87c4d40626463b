package caddyprogress

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// formPart is one part of a test multipart/form-data body.
type formPart struct {
	field    string
	filename *string // nil for a plain field
	content  []byte
}

func fileName(s string) *string { return &s }

// buildForm encodes parts as multipart/form-data with the given boundary,
// the way mime/multipart (and curl -F) writes it.
func buildForm(t testing.TB, boundary string, parts []formPart) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(boundary); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		var pw io.Writer
		var err error
		if p.filename == nil {
			pw, err = w.CreateFormField(p.field)
		} else {
			pw, err = w.CreateFormFile(p.field, *p.filename)
		}
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(p.content)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chunkedReader hands out data in chunks of the given sizes, in turn.
type chunkedReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	size := 1
	if len(c.sizes) > 0 {
		size = max(c.sizes[c.i%len(c.sizes)], 1)
		c.i++
	}
	n := copy(p[:min(len(p), size)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// observed is what the observer made of a body.
type observed struct {
	files  []FileStatus
	gaveUp bool
	passed []byte // what a reader of the counting body got
}

// observeBody streams body through a counting body with a multipart
// observer for boundary, in chunks of the given sizes (in turn), and
// returns what came out and what the observer saw.
func observeBody(t testing.TB, boundary string, body []byte, sizes ...int) observed {
	t.Helper()
	u := newUpload("test", int64(len(body)), time.Now(), progress.StateUploading)
	parts := newPartList(nil)
	o, err := newMultipartObserver(boundary, parts, zap.NewNop(), u.id)
	if err != nil {
		t.Fatalf("boundary %q: %v", boundary, err)
	}
	u.parts.Store(parts)
	b := &countingBody{ReadCloser: io.NopCloser(&chunkedReader{data: body, sizes: sizes}), upload: u, multipart: o}
	passed, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.received.Load(); got != int64(len(body)) {
		t.Fatalf("received %d, want %d", got, len(body))
	}
	parts.mu.Lock()
	gaveUp := parts.gaveUp
	parts.mu.Unlock()
	return observed{files: u.files(), gaveUp: gaveUp, passed: passed}
}

// wantFiles is what the observer should report for parts, all complete.
func wantFiles(parts []formPart) []FileStatus {
	var files []FileStatus
	for _, p := range parts {
		files = append(files, FileStatus{Field: p.field, Filename: p.filename, Received: int64(len(p.content)), Status: partComplete})
	}
	return files
}

func sameFiles(a, b []FileStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Field != b[i].Field || a[i].Received != b[i].Received || a[i].Status != b[i].Status {
			return false
		}
		if (a[i].Filename == nil) != (b[i].Filename == nil) || (a[i].Filename != nil && *a[i].Filename != *b[i].Filename) {
			return false
		}
	}
	return true
}

func describeFiles(files []FileStatus) string {
	var sb strings.Builder
	for _, f := range files {
		name := "<nil>"
		if f.Filename != nil {
			name = fmt.Sprintf("%q", *f.Filename)
		}
		fmt.Fprintf(&sb, "{%q %s %d %s} ", f.Field, name, f.Received, f.Status)
	}
	return sb.String()
}

// chunkings are the ways each body is cut in the unit tests: byte by
// byte, odd sizes that split every delimiter somewhere, and whole.
var chunkings = [][]int{{1}, {2}, {3}, {5, 1, 7}, {13}, {64}, {4096}, {1 << 30}}

func TestMultipartObserverCountsEachPart(t *testing.T) {
	const boundary = "------------------------d74496d66958873e"
	parts := []formPart{
		{field: "title", content: []byte("hello")},
		{field: "empty", filename: fileName("empty.bin"), content: nil},
		{field: "small", filename: fileName("small.bin"), content: payload(10_000)},
		{field: "note", content: []byte("a\r\nb\r\n")},
		{field: "big", filename: fileName("big.bin"), content: payload(300_000)},
	}
	body := buildForm(t, boundary, parts)
	for _, sizes := range chunkings {
		got := observeBody(t, boundary, body, sizes...)
		if !bytes.Equal(got.passed, body) {
			t.Fatalf("chunks %v: the body came out changed", sizes)
		}
		if got.gaveUp || !sameFiles(got.files, wantFiles(parts)) {
			t.Fatalf("chunks %v: gave up %v, files %s\nwant %s", sizes, got.gaveUp, describeFiles(got.files), describeFiles(wantFiles(parts)))
		}
	}
}

// TestMultipartObserverAgreesWithMimeMultipart checks bodies whose
// content looks like a delimiter against Go's own multipart reader.
func TestMultipartObserverAgreesWithMimeMultipart(t *testing.T) {
	const boundary = "b0und"
	tricky := [][]byte{
		[]byte("\r\n--b0unX"),
		[]byte("\r\n--b0und" + "X"),
		[]byte("\r\n--b0und-X"),
		[]byte("\r\r\n--b0unX\r"),
		[]byte("x--b0und\r\n"),
		[]byte("\r"),
		[]byte("\r\n"),
		[]byte("\r\n-"),
		[]byte("\n--b0und "),
	}
	// Go's reader fails on these; the observer, like RFC 2046, does not
	// take a delimiter followed by anything but padding and CRLF, or "--".
	notDelimiters := [][]byte{
		[]byte("x\r\n--b0und \tX"),
		[]byte("x\r\n--b0und  \rX"),
		[]byte("x\r\n--b0und\r\rX"),
	}
	for _, content := range notDelimiters {
		parts := []formPart{{field: "a", content: content}, {field: "b", content: content}}
		body := buildForm(t, boundary, parts)
		for _, sizes := range chunkings {
			if got := observeBody(t, boundary, body, sizes...); got.gaveUp || !sameFiles(got.files, wantFiles(parts)) {
				t.Fatalf("%q, chunks %v: gave up %v, files %s", content, sizes, got.gaveUp, describeFiles(got.files))
			}
		}
	}
	for i, content := range tricky {
		parts := []formPart{
			{field: "a", content: content},
			{field: "b", filename: fileName("b.txt"), content: append(append([]byte{}, content...), content...)},
			{field: "c", content: []byte("end")},
		}
		body := buildForm(t, boundary, parts)
		mr := multipart.NewReader(bytes.NewReader(body), boundary)
		var oracle []FileStatus
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("case %d: mime/multipart: %v", i, err)
			}
			n, err := io.Copy(io.Discard, p)
			if err != nil {
				t.Fatalf("case %d: mime/multipart: %v", i, err)
			}
			var filename *string
			if _, params, err := parseDisposition(p.Header); err == nil {
				if f, ok := params["filename"]; ok {
					filename = &f
				}
			}
			oracle = append(oracle, FileStatus{Field: p.FormName(), Filename: filename, Received: n, Status: partComplete})
		}
		if !sameFiles(oracle, wantFiles(parts)) {
			t.Fatalf("case %d: mime/multipart disagrees with what was written: %s", i, describeFiles(oracle))
		}
		for _, sizes := range chunkings {
			got := observeBody(t, boundary, body, sizes...)
			if got.gaveUp || !sameFiles(got.files, oracle) {
				t.Fatalf("case %d %q, chunks %v: gave up %v, files %s\nwant %s", i, content, sizes, got.gaveUp, describeFiles(got.files), describeFiles(oracle))
			}
		}
	}
}

func parseDisposition(h textproto.MIMEHeader) (string, map[string]string, error) {
	return mime.ParseMediaType(h.Get("Content-Disposition"))
}

func TestMultipartObserverPreambleAndPadding(t *testing.T) {
	body := []byte("preamble\r\n--xyz \t\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a b.txt\"\r\n\r\n" +
		"12345\r\n--xyz\r\n\r\nno headers\r\n--xyz--\r\nepilogue --xyz")
	want := []FileStatus{
		{Field: "f", Filename: fileName("a b.txt"), Received: 5, Status: partComplete},
		{Field: "", Received: 10, Status: partComplete},
	}
	for _, sizes := range chunkings {
		got := observeBody(t, "xyz", body, sizes...)
		if got.gaveUp || !sameFiles(got.files, want) {
			t.Fatalf("chunks %v: gave up %v, files %s", sizes, got.gaveUp, describeFiles(got.files))
		}
	}
}

func TestMultipartObserverShowsPartsInProgress(t *testing.T) {
	body := buildForm(t, "bb", []formPart{
		{field: "one", filename: fileName("1"), content: []byte("abcdef")},
		{field: "two", filename: fileName("2"), content: []byte("ghijkl")},
	})
	u := newUpload("test", int64(len(body)), time.Now(), progress.StateUploading)
	parts := newPartList(nil)
	o, _ := newMultipartObserver("bb", parts, zap.NewNop(), u.id)
	u.parts.Store(parts)
	cut := bytes.Index(body, []byte("abc")) + 3
	o.observe(body[:cut])
	files := u.files()
	if len(files) != 1 || files[0].Received != 3 || files[0].Status != partUploading {
		t.Fatalf("after half of the first part: %s", describeFiles(files))
	}
	// up to the middle of the delimiter after the first part: its bytes
	// are held, not counted to the part
	cut2 := bytes.Index(body, []byte("def")) + 3 + 4
	o.observe(body[cut:cut2])
	files = u.files()
	if len(files) != 1 || files[0].Received != 6 || files[0].Status != partUploading {
		t.Fatalf("in the delimiter after the first part: %s", describeFiles(files))
	}
	o.observe(body[cut2:])
	o.bodyEnded()
	files = u.files()
	if len(files) != 2 || files[0].Received != 6 || files[1].Received != 6 || files[1].Status != partComplete {
		t.Fatalf("at the end: %s", describeFiles(files))
	}
}

func TestMultipartObserverGivesUpOnHostileBodies(t *testing.T) {
	good := buildForm(t, "bnd", []formPart{{field: "f", filename: fileName("x"), content: payload(1000)}})
	var manyParts []formPart
	for i := range maxParts + 1 {
		manyParts = append(manyParts, formPart{field: fmt.Sprint("f", i), content: []byte("x")})
	}
	hugeHeader := []byte("--bnd\r\nContent-Disposition: form-data; name=\"f\"\r\nX-Padding: " +
		strings.Repeat("a", maxHeaderBlock) + "\r\n\r\ndata\r\n--bnd--\r\n")
	for _, tc := range []struct {
		name     string
		boundary string
		body     []byte
	}{
		{"wrong boundary", "other", good},
		{"truncated", "bnd", good[:len(good)-10]},
		{"truncated in the headers", "bnd", good[:20]},
		{"no closing boundary", "bnd", bytes.TrimSuffix(good, []byte("--\r\n"))},
		{"more than 1000 parts", "bnd", buildForm(t, "bnd", manyParts)},
		{"huge part header", "bnd", hugeHeader},
		{"not multipart at all", "bnd", payload(100_000)},
		{"empty", "bnd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sizes := range chunkings {
				got := observeBody(t, tc.boundary, tc.body, sizes...)
				if !bytes.Equal(got.passed, tc.body) {
					t.Fatalf("chunks %v: the body came out changed", sizes)
				}
				if !got.gaveUp || got.files != nil {
					t.Fatalf("chunks %v: gave up %v, files %s; want it to give up and show no files", sizes, got.gaveUp, describeFiles(got.files))
				}
			}
		})
	}
}

func TestMultipartObserverRefusesUnusableBoundaries(t *testing.T) {
	for _, b := range []string{"", strings.Repeat("b", 71), "a\rb", "a\nb"} {
		if _, err := newMultipartObserver(b, newPartList(nil), zap.NewNop(), "x"); err == nil {
			t.Errorf("boundary %q accepted", b)
		}
	}
}

func TestMultipartObserverCleansNames(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	body := []byte("--b\r\nContent-Disposition: form-data; name=\"\xff\xfeF\"; filename=\"" + long + "\"\r\n\r\nx\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"" + strings.Repeat("n", 300) + "\"\r\n\r\ny\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"u\"; filename*=UTF-8''%E2%82%AC%20rates.txt\r\n\r\nz\r\n--b--\r\n")
	got := observeBody(t, "b", body, 7)
	if got.gaveUp || len(got.files) != 3 {
		t.Fatalf("gave up %v, files %s", got.gaveUp, describeFiles(got.files))
	}
	for _, f := range got.files {
		if !utf8.ValidString(f.Field) || len(f.Field) > maxNameBytes || (f.Filename != nil && (!utf8.ValidString(*f.Filename) || len(*f.Filename) > maxNameBytes)) {
			t.Fatalf("name not cleaned: %s", describeFiles(got.files))
		}
	}
	if got.files[0].Field != "\uFFFDF" || *got.files[0].Filename != strings.Repeat("é", 128) {
		t.Fatalf("first part: %s", describeFiles(got.files[:1]))
	}
	if got.files[1].Field != strings.Repeat("n", 256) || got.files[1].Filename != nil {
		t.Fatalf("second part: %s", describeFiles(got.files[1:2]))
	}
	if *got.files[2].Filename != "€ rates.txt" {
		t.Fatalf("third part (RFC 2231 filename*): %s", describeFiles(got.files[2:]))
	}
}

// FuzzMultipartObserver feeds the observer any body, cut into chunks any
// way: the bytes read through the counting body must equal the input,
// nothing may panic, what it reports must not depend on the chunking,
// and it must keep to its limits.
func FuzzMultipartObserver(f *testing.F) {
	f.Add("bnd", buildForm(f, "bnd", []formPart{
		{field: "title", content: []byte("hi")},
		{field: "f", filename: fileName("a.txt"), content: []byte("\r\n--bnd-\r\n--bnX")},
	}), []byte{1, 3, 7})
	f.Add("xyz", []byte("pre\r\n--xyz \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xyz\r\n\r\n\r\n--xyz--"), []byte{2})
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"\xff\"; filename*=UTF-8''%E2%82%AC\r\n\r\n\r\n--b--"), []byte{})
	f.Add("b", []byte("--b\n\n--b--"), []byte{0, 255})
	f.Fuzz(func(t *testing.T, boundary string, body []byte, cuts []byte) {
		if _, err := newMultipartObserver(boundary, newPartList(nil), zap.NewNop(), "x"); err != nil {
			return
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		got := observeBody(t, boundary, body, sizes...)
		if !bytes.Equal(got.passed, body) {
			t.Fatalf("the body came out changed")
		}
		whole := observeBody(t, boundary, body, len(body)+1)
		if got.gaveUp != whole.gaveUp || !sameFiles(got.files, whole.files) {
			t.Fatalf("chunks %v: gave up %v, files %s\nwhole: gave up %v, files %s", sizes, got.gaveUp, describeFiles(got.files), whole.gaveUp, describeFiles(whole.files))
		}
		if len(got.files) > maxParts {
			t.Fatalf("%d parts kept", len(got.files))
		}
		var sum int64
		for i, f := range got.files {
			sum += f.Received
			if !utf8.ValidString(f.Field) || len(f.Field) > maxNameBytes || (f.Filename != nil && (!utf8.ValidString(*f.Filename) || len(*f.Filename) > maxNameBytes)) {
				t.Fatalf("part %d: name not cleaned: %s", i, describeFiles(got.files[i:i+1]))
			}
			if f.Status != partComplete && i != len(got.files)-1 {
				t.Fatalf("part %d is %s but a later part exists", i, f.Status)
			}
		}
		if sum > int64(len(body)) {
			t.Fatalf("parts add up to %d bytes of a %d-byte body", sum, len(body))
		}
		if !got.gaveUp {
			// a body it followed to the end was closed: every part complete
			for i, f := range got.files {
				if f.Status != partComplete {
					t.Fatalf("part %d is %s at the end of a closed body", i, f.Status)
				}
			}
		}
	})
}

// BenchmarkMultipartObserver measures the observer's throughput on a
// 20 MiB form with three files, read in 32 KiB chunks (what
// reverse_proxy's copy buffer asks for).
func BenchmarkMultipartObserver(b *testing.B) {
	const boundary = "------------------------d74496d66958873e"
	body := buildForm(b, boundary, []formPart{
		{field: "title", content: []byte("hello")},
		{field: "a", filename: fileName("a.bin"), content: payload(1 << 20)},
		{field: "b", filename: fileName("b.bin"), content: payload(19 << 20)},
		{field: "c", filename: fileName("c.bin"), content: nil},
	})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		o, _ := newMultipartObserver(boundary, newPartList(nil), zap.NewNop(), "bench")
		for p := body; len(p) > 0; {
			n := min(len(p), 32<<10)
			o.observe(p[:n])
			p = p[n:]
		}
		o.bodyEnded()
		if o.state != scanEpilogue {
			b.Fatalf("observer ended in state %d", o.state)
		}
	}
}

func TestMultipartObserverLogsOnceWhenItGivesUp(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	parts := newPartList(nil)
	o, _ := newMultipartObserver("b", parts, zap.New(core), "loud")
	o.observe([]byte("--b\r\nX-Big: " + strings.Repeat("x", maxHeaderBlock)))
	o.observe([]byte("\r\n\r\nmore\r\n--b--\r\n"))
	o.bodyEnded()
	if logs.Len() != 1 {
		t.Fatalf("%d log lines, want 1: %v", logs.Len(), logs.All())
	}
	entry := logs.All()[0]
	if entry.Level != zap.DebugLevel || entry.ContextMap()["id"] != "loud" || !strings.Contains(entry.ContextMap()["reason"].(string), "header") {
		t.Fatalf("log line = %+v", entry)
	}
}
