package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/thanos-io/objstore"
)

func TestFencedBucketRefusesWritesAfterLostLeadership(t *testing.T) {
	ctx := context.Background()
	inner := objstore.NewInMemBucket()
	tm := &term{}
	b := &fencedBucket{Bucket: inner, t: tm}

	require.NoError(t, b.Upload(ctx, "coordinator/admin.json", strings.NewReader("v1")))
	tm.fenced.Store(true)
	require.ErrorIs(t, b.Upload(ctx, "coordinator/admin.json", strings.NewReader("v2")), errFenced)
	require.ErrorIs(t, b.Delete(ctx, "coordinator/admin.json"), errFenced)

	// Reads still work; the object is unchanged.
	r, err := b.Get(ctx, "coordinator/admin.json")
	require.NoError(t, err)
	defer r.Close()
	buf := make([]byte, 8)
	n, _ := r.Read(buf)
	require.Equal(t, "v1", string(buf[:n]))
}
