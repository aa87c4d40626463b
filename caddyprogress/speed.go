package caddyprogress

import (
	"math"
	"time"
)

// Speed is measured over a sliding window of samples of the received
// byte count. Samples are taken when somebody looks at the upload (a
// status poll or an events tick), never on the upload's hot path.
const (
	speedWindowSpan   = 3 * time.Second        // how far back the speed looks
	speedMinSpan      = 500 * time.Millisecond // shorter spans are too noisy to use
	speedSampleSpread = 250 * time.Millisecond // least time between two samples
)

type speedSample struct {
	at    time.Duration // since the upload started
	bytes int64
}

// speedWindow is a ring of the most recent samples, oldest first from next.
type speedWindow struct {
	samples [16]speedSample
	n       int // samples held
	next    int // where the next sample goes
}

// observe returns the speed in bytes per second at time at (since the
// upload started) with bytes received, and records the sample.
func (w *speedWindow) observe(at time.Duration, bytes int64) int64 {
	if w.n == 0 {
		w.add(speedSample{}) // the upload started with nothing received
	}
	ref := w.reference(at)
	var speed int64
	if span := at - ref.at; span > 0 {
		speed = int64(math.Round(float64(bytes-ref.bytes) / span.Seconds()))
	}
	if newest := w.at(w.n - 1); at-newest.at >= speedSampleSpread {
		w.add(speedSample{at: at, bytes: bytes})
	}
	return speed
}

// reference picks the sample to measure from: the oldest one inside the
// window, unless that is too recent to give a steady figure, in which
// case the one before it.
func (w *speedWindow) reference(at time.Duration) speedSample {
	i := 0
	for i < w.n-1 && at-w.at(i).at > speedWindowSpan {
		i++
	}
	if at-w.at(i).at < speedMinSpan && i > 0 {
		i--
	}
	return w.at(i)
}

// at returns the i-th oldest sample.
func (w *speedWindow) at(i int) speedSample {
	start := w.next - w.n
	if start < 0 {
		start += len(w.samples)
	}
	return w.samples[(start+i)%len(w.samples)]
}

func (w *speedWindow) add(s speedSample) {
	w.samples[w.next] = s
	w.next = (w.next + 1) % len(w.samples)
	if w.n < len(w.samples) {
		w.n++
	}
}
