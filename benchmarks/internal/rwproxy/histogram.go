package rwproxy

import (
	"math"
	"time"
)

// maxDelayMs caps the delay histogram: a longer delay counts in its last
// bucket (Max still says how long it was).
const maxDelayMs = int64(time.Hour / time.Millisecond)

// Histogram counts delays at millisecond resolution: bucket i holds the
// delays in [i ms, i+1 ms). The zero value is empty and ready to use; it is
// not safe for concurrent use (the Proxy guards its own).
type Histogram struct {
	counts   []uint64
	total    uint64
	max      time.Duration
	negative uint64 // delays below zero, counted in bucket 0
}

// Observe adds one delay.
func (h *Histogram) Observe(d time.Duration) { h.ObserveN(d, 1) }

// ObserveN adds n samples of the same delay.
func (h *Histogram) ObserveN(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	if d < 0 {
		h.negative += n
		d = 0
	}
	if d > h.max || h.total == 0 {
		h.max = d
	}
	ms := min(d.Milliseconds(), maxDelayMs)
	if int(ms) >= len(h.counts) {
		grown := make([]uint64, max(int(ms)+1, 2*len(h.counts)))
		copy(grown, h.counts)
		h.counts = grown
	}
	h.counts[ms] += n
	h.total += n
}

// Count is the number of delays observed.
func (h *Histogram) Count() uint64 { return h.total }

// Negative is the number of delays below zero (a sample stamped after it
// arrived: clock skew), counted as 0.
func (h *Histogram) Negative() uint64 { return h.negative }

// Max is the longest delay observed (0 when empty).
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method,
// truncated to the millisecond (beyond the histogram's cap of an hour: the
// maximum). An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for ms, c := range h.counts {
		seen += c
		if seen >= rank {
			if int64(ms) == maxDelayMs {
				return h.max
			}
			return time.Duration(ms) * time.Millisecond
		}
	}
	return h.max
}

// Clone returns an independent copy.
func (h *Histogram) Clone() Histogram {
	c := *h
	c.counts = append([]uint64(nil), h.counts...)
	return c
}
