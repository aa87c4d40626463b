package clustertest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxSharedDoc is the core's cap on a document in Redis (shareddoc.go).
const maxSharedDoc = 64 << 10

// usedMemory is redis-server's used_memory.
func usedMemory(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// checkRedisDocs checks every hash the tracker keeps in Redis: no value
// past maxSharedDoc (and a little for the group entry's prefix), no
// group entry with files.
func checkRedisDocs(t testing.TB, c *redis.Client) (records, members int) {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "upload_progress:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if typ, _ := c.Type(ctx, key).Result(); typ != "hash" {
			continue
		}
		fields, err := c.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		group := strings.HasSuffix(key, ":members")
		for field, v := range fields {
			if len(v) > maxSharedDoc+256 {
				t.Fatalf("%s %s holds %d bytes, past the %d cap", key, field, len(v), maxSharedDoc)
			}
			if group {
				members++
				if strings.Contains(v, `"files"`) {
					t.Fatalf("group hash %s holds member %s with its files: %.200s", key, field, v)
				}
			} else if field == "doc" {
				records++
			}
		}
	}
	return records, members
}

// The probe of issue 15 (section 8): 20 uploads of 640 KB whose 1,000
// parts are named with '<' (a 3 MB document each) took Redis from 1.6 MB
// to 128 MB: each record held its whole document, and the group's hash
// another copy. A document in Redis now takes at most 64 KiB (past it,
// its files are left out and "files_truncated" says so), a group's hash
// holds summaries, and both instances read the group and each upload.
func TestRedisHoldsBoundedDocuments(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	// room for every upload's whole document on A: the test is about
	// what goes to Redis (the default max_memory keeps 32 MiB)
	a := startInstance(t, "A", rs.URL(), "\t\tmax_memory 256MiB", up.host)
	b := startInstance(t, "B", rs.URL(), "\t\tmax_memory 256MiB", up.host)
	c := rs.Client(t)
	before := usedMemory(t, c)

	const uploads = 20
	var total, held int64
	var wg sync.WaitGroup
	release := make(chan struct{})
	sentParts := make(chan struct{}, uploads)
	for i := range uploads {
		parts, closing := ampBody(i, true)
		body := append(append([]byte{}, parts...), closing...)
		total += int64(len(body))
		held += int64(len(parts))
		header := http.Header{}
		header.Set("Content-Type", fmt.Sprintf("multipart/form-data; boundary=amp-boundary-%03d", i))
		header.Set("X-Upload-Group", "lt")
		wg.Go(func() {
			id := fmt.Sprintf("lt-%02d", i)
			hb := &heldBody{parts: parts, closing: closing, release: release, sentParts: sentParts}
			if r := a.upload(id, hb, int64(len(body)), header); r.code != http.StatusOK {
				t.Errorf("upload %s: %+v", id, r)
			} else if up.sha(id) != sha256Hex(body) {
				t.Errorf("upload %s reached the upstream altered", id)
			}
		})
	}
	// in flight, every part received: B reads the group from Redis
	deadline := time.Now().Add(30 * time.Second)
	for {
		var g groupStatus
		code := b.getJSON(t, "/upload/status/?group=lt", &g)
		if code == 200 && len(g.Uploads) == uploads && g.Received == held {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("group through B while held: %d %s, %d members, %d of %d bytes", code, g.Status, len(g.Uploads), g.Received, held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range uploads { // each watched through B: its instance publishes its progress
		id := fmt.Sprintf("lt-%02d", i)
		var s status
		if code := b.getJSON(t, "/upload/status/"+id, &s); code != 200 || s.Status != "uploading" {
			close(release)
			t.Fatalf("%s through B while held: %d %+v", id, code, s)
		}
	}
	checkRedisDocs(t, c)
	inFlight := usedMemory(t, c) - before
	t.Logf("Redis used_memory grew %d bytes for %d uploads in flight with 3 MB documents: %d an upload", inFlight, uploads, inFlight/uploads)
	close(release)
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range uploads {
		id := fmt.Sprintf("lt-%02d", i)
		var own struct {
			status
			Files          []map[string]any `json:"files"`
			FilesTruncated bool             `json:"files_truncated"`
		}
		if code := a.getJSON(t, "/upload/status/"+id, &own); code != 200 || own.Status != "complete" || len(own.Files) != ampParts || own.FilesTruncated {
			t.Fatalf("%s through A: %d %s, %d files, truncated %v", id, code, own.Status, len(own.Files), own.FilesTruncated)
		}
		own.Files, own.FilesTruncated = nil, false
		if code := b.getJSON(t, "/upload/status/"+id, &own); code != 200 || own.Status != "complete" || own.Files != nil || !own.FilesTruncated {
			t.Fatalf("%s through B: %d %s, %d files, truncated %v; want complete, no files, truncated", id, code, own.Status, len(own.Files), own.FilesTruncated)
		}
	}
	for _, inst := range []*instance{a, b} {
		var g groupStatus
		if code := inst.getJSON(t, "/upload/status/?group=lt", &g); code != 200 || g.Status != "complete" || len(g.Uploads) != uploads || g.Received != total {
			t.Fatalf("group through %s: %d %s, %d members, %d bytes", inst.name, code, g.Status, len(g.Uploads), g.Received)
		}
	}
	records, members := checkRedisDocs(t, c)
	if records < uploads || members != uploads {
		t.Fatalf("Redis holds %d records and %d group members; want %d of each", records, members, uploads)
	}
	grown := usedMemory(t, c) - before
	t.Logf("Redis used_memory grew %d bytes for %d retained records of 3 MB documents: %d a record", grown, uploads, grown/uploads)
	if grown > uploads*(2*maxSharedDoc) || inFlight > uploads*(2*maxSharedDoc) {
		t.Fatalf("Redis grew %d bytes for %d records", grown, uploads)
	}
	if n := counter(t, []*instance{a}, "docs_truncated_total"); n < uploads {
		t.Fatalf("A counted %d truncated documents; want at least %d", n, uploads)
	}
	if n := counter(t, []*instance{a}, "doc_bytes_total"); n <= 0 || n > int64(uploads)*4*maxSharedDoc {
		t.Fatalf("A counted %d document bytes sent", n)
	}
}

// A group of 1,000 members, uploaded through both instances, 20 of them
// forms with 3 MB documents, reads the same through either.
func TestThousandMemberGroupReadsThroughEitherInstance(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), "", up.host)
	b := startInstance(t, "B", rs.URL(), "", up.host)
	const members, forms, atOnce = 1000, 20, 32
	before := usedMemory(t, rs.Client(t))
	var total int64
	bodies := make([][]byte, members)
	headers := make([]http.Header, members)
	for i := range members {
		header := http.Header{"X-Upload-Group": {"thousand"}}
		if i < forms {
			parts, closing := ampBody(i, true)
			bodies[i] = append(parts, closing...)
			header.Set("Content-Type", fmt.Sprintf("multipart/form-data; boundary=amp-boundary-%03d", i))
		} else {
			bodies[i] = payload(1000 + i)
		}
		headers[i] = header
		total += int64(len(bodies[i]))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, atOnce)
	for i := range members {
		sem <- struct{}{}
		inst := a
		if i%2 == 1 {
			inst = b
		}
		wg.Go(func() {
			defer func() { <-sem }()
			id := fmt.Sprintf("k-%04d", i)
			if r := inst.upload(id, bytesReader(bodies[i]), int64(len(bodies[i])), headers[i]); r.code != http.StatusOK {
				t.Errorf("upload %s through %s: %+v", id, inst.name, r)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, inst := range []*instance{a, b, a, b} {
		// the other instance's final documents reach Redis within an
		// interval or so of their answers: wait for them
		var g groupStatus
		var code int
		deadline := time.Now().Add(30 * time.Second)
		for {
			g = groupStatus{}
			code = inst.getJSON(t, "/upload/status/?group=thousand", &g)
			if code == 200 && g.Status == "complete" && len(g.Uploads) == members && g.Received == total {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("group through %s: %d %s, %d members, %d of %d bytes", inst.name, code, g.Status, len(g.Uploads), g.Received, total)
			}
			time.Sleep(50 * time.Millisecond)
		}
		seen := make(map[string]bool, members)
		for _, m := range g.Uploads {
			if m.Status != "complete" || seen[m.ID] {
				t.Fatalf("group through %s: member %+v", inst.name, m)
			}
			seen[m.ID] = true
		}
	}
	grown := usedMemory(t, rs.Client(t)) - before
	t.Logf("Redis used_memory grew %d bytes for %d retained records (%d of them 3 MB forms), %d a record", grown, members, forms, grown/members)
	if _, n := checkRedisDocs(t, rs.Client(t)); n != members {
		t.Fatalf("the group's hash holds %d members, want %d", n, members)
	}
}
