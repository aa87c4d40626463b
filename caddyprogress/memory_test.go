package caddyprogress

import (
	"bytes"
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapGrowth returns how much the live heap grew while fill ran.
func heapGrowth(fill func()) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fill()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// The memory a tracker accounts for is what it really keeps, within a
// factor of 1.5 either way, for finished records and for uploads in
// flight with 1,000-part forms.
func TestAccountedMemoryFollowsTheHeap(t *testing.T) {
	const factor = 1.5
	check := func(what string, tr *tracker, grown int64) {
		t.Helper()
		accounted := tr.memory.used()
		ratio := float64(grown) / float64(accounted)
		t.Logf("%s: accounted %d bytes, heap grew %d (%.2f)", what, accounted, grown, ratio)
		if ratio > factor || ratio < 1/factor {
			t.Errorf("%s: heap grew %d bytes for %d accounted: off by more than %.1f", what, grown, accounted, factor)
		}
	}

	tr := newTracker("finished")
	defer tr.Destruct()
	tr.setMaxMemory(1 << 30)
	const records = 20000
	ids := make([]string, records)
	for i := range ids {
		ids[i] = newID()
	}
	grown := heapGrowth(func() {
		for _, id := range ids {
			u, err := tr.start(id, 1<<20, 0, records)
			if err != nil {
				t.Fatal(err)
			}
			u.addReceived(1 << 20)
			tr.finish(u, progress.StateComplete, 200, "", time.Hour)
		}
	})
	check(fmt.Sprintf("%d finished records", records), tr, grown)

	forms := newTracker("forms")
	defer forms.Destruct()
	forms.setMaxMemory(1 << 30)
	var live []*upload
	grown = heapGrowth(func() {
		for i := range 20 {
			u, err := forms.start(fmt.Sprintf("form-%d", i), 1<<20, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			parts := newPartList(forms)
			u.parts.Store(parts)
			for j := range maxParts {
				name := fmt.Sprintf("%03d", j) + strings.Repeat("n", 247)
				filename := strings.Clone(name)
				p, err := parts.add(strings.Clone(name), &filename)
				if err != nil {
					t.Fatal(err)
				}
				p.received.Add(1)
			}
			u.addReceived(1000)
			u.doc(time.Now())
			live = append(live, u)
		}
	})
	check("20 uploads in flight with 1,000 parts each", forms, grown)
	runtime.KeepAlive(live)
}

// A flood of 1,000-part forms, many at once, never takes the tracker
// past max_memory (it comes close: finished records, part lists and
// documents are made room for), every upload arrives intact, and the
// tracker still tracks the next upload, with its parts. (An upload of
// the flood that starts while those in flight fill the budget may go
// untracked, as documented; the last one did, once, in CI.)
func TestFloodOfLargeFormsStaysUnderMaxMemory(t *testing.T) {
	const maxMemory = 4 << 20
	up := newUpstream(t)
	p := startProxy(t, fmt.Sprintf("tracker flood\n\t\tmax_memory %d\n\t\tinterval 10ms", maxMemory), up.host)
	body := largeForm(t, curlBoundary)
	tr := liveTracker("flood")

	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if used := tr.memoryInUse(); used > peak.Load() {
				peak.Store(used)
			}
			runtime.Gosched()
		}
	})

	const uploads, atOnce = 48, 16
	var wg sync.WaitGroup
	sem := make(chan struct{}, atOnce)
	for i := range uploads {
		id := fmt.Sprintf("flood-%d", i)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			paced := &pacedReader{data: body, chunk: 32 << 10, pause: 2 * time.Millisecond}
			resp, _ := p.upload(t, http.MethodPost, "/", paced, int64(len(body)), formHeader(id, curlBoundary))
			if resp.StatusCode != 200 {
				t.Errorf("upload %s answered %d", id, resp.StatusCode)
			}
			if _, err := p.client.Get(p.base + DefaultStatusPath + id); err != nil { // a poll keeps a document
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	for i := range uploads {
		if got, _ := up.get(fmt.Sprintf("flood-%d", i)); got.sha256 != sha256Hex(body) {
			t.Fatalf("upload %d did not reach the upstream intact", i)
		}
	}
	budget := keepBudget(maxMemory)
	t.Logf("%d uploads of a %d-byte form, %d at once: peak %d bytes kept of max_memory %d (budget %d)", uploads, len(body), atOnce, peak.Load(), maxMemory, budget)
	if peak.Load() > budget {
		t.Fatalf("the tracker kept %d bytes, past its budget %d of max_memory %d", peak.Load(), budget, maxMemory)
	}
	if peak.Load() < budget/2 {
		t.Fatalf("the tracker kept at most %d bytes: the flood never came near its budget %d", peak.Load(), budget)
	}
	resp, _ := p.upload(t, http.MethodPost, "/", bytes.NewReader(body), int64(len(body)), formHeader("after-flood", curlBoundary))
	if resp.StatusCode != 200 {
		t.Fatalf("the upload after the flood answered %d", resp.StatusCode)
	}
	_, after := p.getStatus(t, "after-flood")
	if after.Status != "complete" || len(after.Files) == 0 {
		t.Fatalf("the upload after the flood: %+v", after)
	}
}

// Everything a record counted is uncounted when it goes: once every
// record has expired, the live records' count is back to zero.
func TestMemoryIsReleasedWhenRecordsGo(t *testing.T) {
	tr := newTracker("release")
	defer tr.Destruct()
	for i := range 50 {
		u, err := tr.start(fmt.Sprintf("u-%d", i), 100, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		tr.join(fmt.Sprintf("g-%d", i%3), u, 1000)
		parts := newPartList(tr)
		u.parts.Store(parts)
		for j := range 10 {
			if _, err := parts.add(fmt.Sprintf("field-%d", j), nil); err != nil {
				t.Fatal(err)
			}
		}
		u.addReceived(50)
		u.doc(time.Now())
		switch i % 5 {
		case 0: // gives up its files mid-way
			parts.giveUp()
			tr.finish(u, progress.StateAborted, 0, "gone", time.Minute)
		case 1: // still in flight, then replaced... after it ends
			tr.finish(u, progress.StateComplete, 200, "", time.Minute)
			if _, err := tr.start(u.id, 10, 0, 1000); err != nil {
				t.Fatal(err)
			}
		default:
			tr.finish(u, progress.StateComplete, 200, "", time.Minute)
		}
		if _, err := tr.reserve(time.Minute, 1000, 100); err != nil {
			t.Fatal(err)
		}
	}
	if live := tr.memory.live.Load(); live <= 0 {
		t.Fatalf("live records count %d bytes", live)
	}
	tr.mu.Lock()
	var replacements []*upload // still in flight
	for _, u := range tr.uploads {
		if u.currentState() == progress.StateUploading {
			replacements = append(replacements, u)
		}
	}
	tr.mu.Unlock()
	for _, u := range replacements {
		tr.finish(u, progress.StateComplete, 200, "", time.Minute)
	}
	tr.removeExpired(time.Now().Add(time.Hour))
	if live := tr.memory.live.Load(); live != 0 || len(tr.uploads) != 0 || tr.finished.Len() != 0 || len(tr.groups.byKey) != 0 {
		t.Fatalf("after every record expired: %d bytes counted for live records, %d live, %d finished, %d groups",
			live, len(tr.uploads), tr.finished.Len(), len(tr.groups.byKey))
	}
	if chunks := tr.finished.chunkBytes; chunks > arenaChunk {
		t.Fatalf("the empty finished store holds %d bytes of chunks; want at most the one being filled", chunks)
	}
}

// The tracker keeps at most max_memory less the garbage collector's
// headroom: half with the default GOGC=100, a quarter with GOGC=300,
// all of it with GOGC=off; a tracker provisioned under a setting keeps
// to its budget.
func TestBudgetLeavesTheCollectorsHeadroom(t *testing.T) {
	restore := debug.SetGCPercent(100)
	defer debug.SetGCPercent(restore)
	for _, c := range []struct {
		percent int
		want    int64
	}{{100, 32 << 20}, {300, 16 << 20}, {50, 64 << 20 * 2 / 3}, {-1, 64 << 20}} {
		debug.SetGCPercent(c.percent)
		if got := keepBudget(64 << 20); got != c.want {
			t.Errorf("GOGC %d: budget %d of max_memory %d, want %d", c.percent, got, 64<<20, c.want)
		}
	}
	debug.SetGCPercent(100)
	tr := newTracker("budget")
	defer tr.Destruct()
	tr.setMaxMemory(1 << 20)
	kept := 0
	for i := range 10000 {
		if _, err := tr.start(fmt.Sprintf("budget-%05d", i), -1, 0, 100000); err != nil {
			break
		}
		kept++
	}
	if used := tr.memoryInUse(); used > 1<<19 || used < 1<<19-2*recordBytes("budget-00000") {
		t.Fatalf("%d records take %d bytes: the tracker should stop within a record of half of max_memory (%d)", kept, used, 1<<19)
	}
}
