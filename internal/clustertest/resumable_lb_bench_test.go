package clustertest

import (
	"bytes"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/tests3"
)

// BenchmarkResumableThroughRoundRobin uploads RESUMABLE_BENCH_MIB (1024)
// MiB through the round-robin front to two instances on one folder:
// once as a plain tracked upload (one POST to /upload), once as a
// resumable upload in PATCHes of 64 MiB alternating between the
// instances, whose last PATCH carries one byte, so its time is the time
// from the last byte to the backend's answer (reading the file back and
// delivering it). It reports both throughputs, that time, and the
// commands the instances' lock and claim client ran in Redis per PATCH
// (a Lua script's own commands included).
//
//	go test -run XXX -bench ResumableThroughRoundRobin -benchtime 1x ./internal/clustertest
func BenchmarkResumableThroughRoundRobin(b *testing.B) {
	benchmarkThroughRoundRobin(b, sharedFolderOptions(b.TempDir()))
}

// BenchmarkResumableS3ThroughRoundRobin is BenchmarkResumableThroughRoundRobin
// with the uploads in a bucket of a real S3 server on loopback (Versity's
// S3 gateway on this machine's disk, package tests3), not a folder: the
// 64 MiB PATCHes become parts of one multipart upload, and the delivery
// reads the completed object back from the gateway.
//
//	go test -run XXX -bench ResumableS3ThroughRoundRobin -benchtime 1x ./internal/clustertest
func BenchmarkResumableS3ThroughRoundRobin(b *testing.B) {
	gw := tests3.Start(b, s3Bucket)
	gw.SetEnv(b) // the instances inherit it
	// swept as by default (every 30s), as the folder's benchmark is
	benchmarkThroughRoundRobin(b, strings.Replace(s3Options(gw), "\t\t\treserve_for 1s\n", "", 1))
}

// benchmarkThroughRoundRobin runs the benchmarks above with the
// resumable block options on both instances.
func benchmarkThroughRoundRobin(b *testing.B, options string) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("RESUMABLE_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	size := mib << 20
	const chunk = 64 << 20
	rd := startRedis(b)
	mon := rd.Monitor(b)
	back := newDeliveries(b, 0)
	a := startInstance(b, "A", rd.URL(), options, back.URL)
	bb := startInstance(b, "B", rd.URL(), options, back.URL)
	front := &instance{t: b, name: "front", base: startFront(b, a, bb), client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	data := payload(size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	var plain, resumable, lastByte time.Duration
	var patches int
	for range b.N {
		start := time.Now()
		if r := front.upload("", bytes.NewReader(data), int64(size), nil); r.code != http.StatusCreated {
			b.Fatalf("plain upload: %+v", r)
		}
		plain += time.Since(start)

		start = time.Now()
		path := createOn(b, front, size)
		offset := 0
		for offset < size-1 {
			end := min(offset+chunk, size-1)
			resp, body := patchOn(b, front, path, int64(offset), bytes.NewReader(data[offset:end]), int64(end-offset))
			if resp == nil || resp.StatusCode != http.StatusNoContent {
				b.Fatalf("PATCH at %d: %v %s", offset, resp, body)
			}
			offset = end
			patches++
		}
		last := time.Now()
		resp, body := patchOn(b, front, path, int64(offset), bytes.NewReader(data[offset:]), int64(size-offset))
		if resp == nil || resp.StatusCode != http.StatusCreated {
			b.Fatalf("last PATCH: %v %s", resp, body)
		}
		patches++
		lastByte += time.Since(last)
		resumable += time.Since(start)
	}
	b.StopTimer()
	got := back.complete()
	if len(got) != 2*b.N || got[len(got)-1].sha256 != sha256Hex(data) {
		b.Fatalf("the backend got %d complete deliveries, want %d, the last byte-identical", len(got), 2*b.N)
	}
	n := float64(b.N)
	b.ReportMetric(float64(size)/(1<<20)/(plain.Seconds()/n), "plain-MiB/s")
	b.ReportMetric(float64(size)/(1<<20)/(resumable.Seconds()/n), "resumable-MiB/s")
	b.ReportMetric(lastByte.Seconds()*1000/n, "last-byte-to-answer-ms")
	b.ReportMetric(float64(mon.Counts()["caddy-upload-progress-resumable"])/float64(patches), "redis-cmds/PATCH")
}
