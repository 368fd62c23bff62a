package shardring

import "math/bits"

// Hashes are uniform, so a counting sort on their top bits leaves a handful
// of items per bucket: two linear passes instead of n·log n comparisons and
// the cache misses of a comparison sort over tens of megabytes.

// prefixBits picks a bucket count of about n/4: few enough items a bucket
// to scan, few enough buckets for the counts to stay in cache.
func prefixBits(n int) uint { return uint(bits.Len(uint(n / 4))) }

// bucketOf returns the top b bits of h (0 when b is 0).
func bucketOf(h uint64, b uint) uint64 {
	if b == 0 {
		return 0
	}
	return h >> (64 - b)
}

// indexed is a hash and the position it came from.
type indexed struct {
	h   uint64
	pos int32
}

// groupByPrefix returns hs ordered by their top b bits, stable within a
// prefix, each with its index in hs. One slice of pairs, not two slices,
// halves the cache lines the scatter keeps open.
func groupByPrefix(hs []uint64, b uint) []indexed {
	start := prefixStarts(hs, b)
	grouped := make([]indexed, len(hs))
	for i, h := range hs {
		p := bucketOf(h, b)
		grouped[start[p]] = indexed{h, int32(i)}
		start[p]++
	}
	return grouped
}

// prefixStarts returns, for each b-bit prefix p and one past the last, how
// many of hs have a prefix below p: where prefix p starts once hs is
// grouped (or sorted).
func prefixStarts(hs []uint64, b uint) []int32 {
	start := make([]int32, (1<<b)+1)
	for _, h := range hs {
		start[bucketOf(h, b)+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	return start
}

// sortPoints sorts points ascending, carrying owners along. It is stable, so
// equal points stay in input order (New and With feed them by member index).
func sortPoints(pts []uint64, own []int32) ([]uint64, []int32) {
	grouped := groupByPrefix(pts, prefixBits(len(pts)))
	sp := make([]uint64, len(pts))
	so := make([]int32, len(pts))
	for i, g := range grouped {
		sp[i], so[i] = g.h, own[g.pos]
	}
	// Insertion sort finishes each (tiny) bucket; across buckets the prefix
	// order already holds, so one pass over the whole slice suffices.
	for i := 1; i < len(sp); i++ {
		p, o := sp[i], so[i]
		j := i
		for j > 0 && sp[j-1] > p {
			sp[j], so[j] = sp[j-1], so[j-1]
			j--
		}
		sp[j], so[j] = p, o
	}
	return sp, so
}
