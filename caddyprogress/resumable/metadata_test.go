package resumable_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Metadata keys are compared as the headers they become: a FileName is
// checked like a filename, and two keys that would reach the backend as
// one header are refused with 400, whatever their values.
func TestMetadataKeysComparedAsHeaders(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "deliver_as multipart")
	for _, tt := range []struct {
		name, metadata, says string
	}{
		{"FileName with a traversal", meta("FileName", "../../../etc/passwd"), "FileName"},
		{"FILENAME with a backslash", meta("FILENAME", `..\..\boot.ini`), "FILENAME"},
		{"filename and fileName", meta("filename", "safe.txt", "fileName", "../../../etc/passwd"), "same header"},
		{"filename twice, both safe", meta("filename", "a.txt", "FILENAME", "a.txt"), "same header"},
		{"the same key twice", meta("filename", "a.txt", "filename", "b.txt"), "same header"},
		{"- and _ alike", meta("file-name", "a.txt", "file_name", "b.txt"), "same header"},
		{"FileType not a media type", meta("FileType", "not a type"), "media type"},
		{"a value with CR LF", meta("Note", "a\r\nX-Injected: 1"), "control"},
		{"a filename too long", meta("filename", strings.Repeat("a", 256)), "255"},
		{"a value too long", meta("note", strings.Repeat("a", 4097)), "4096"},
	} {
		resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
			"Upload-Length": "10", "Upload-Metadata": tt.metadata}, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tt.name, resp.StatusCode, body)
			continue
		}
		assertJSONError(t, tt.name, body, tt.says)
	}

	// Keys in any case reach the delivery as its lower-case keys would:
	// the multipart filename and type, and one header each.
	data := payload(1000)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length":   fmt.Sprint(len(data)),
		"Upload-Metadata": meta("FileName", "report.pdf", "FileType", "application/pdf", "Album", "summer"),
		"Content-Type":    "application/offset+octet-stream",
	}, data)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation with upload and keys in mixed case: %d %s", resp.StatusCode, body)
	}
	got := back.got()
	if len(got) != 1 {
		t.Fatalf("the backend got %d deliveries, want 1", len(got))
	}
	d := got[0]
	_, filename, partType, content := multipartFile(t, d.header.Get("Content-Type"), d.body)
	if filename != "report.pdf" || partType != "application/pdf" || !bytes.Equal(content, data) {
		t.Errorf("multipart part: filename %q type %q, %d bytes; want report.pdf, application/pdf", filename, partType, len(content))
	}
	for name, want := range map[string]string{"Upload-Metadata-Filename": "report.pdf", "Upload-Metadata-Filetype": "application/pdf", "Upload-Metadata-Album": "summer"} {
		if v := d.header.Values(name); len(v) != 1 || v[0] != want {
			t.Errorf("delivery header %s: %q, want %q", name, v, want)
		}
	}
}
