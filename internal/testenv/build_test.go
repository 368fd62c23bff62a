package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBuildCommands(t *testing.T) {
	dir := t.TempDir()
	err := BuildCommands(dir, "no-such-command")
	require.ErrorContains(t, err, "no-such-command")
	require.NoError(t, BuildCommands(dir), "nothing to build")
	if testing.Short() {
		t.Skip("builds a command")
	}
	require.NoError(t, BuildCommands(dir, "shardctl"))
	fi, err := os.Stat(filepath.Join(dir, "shardctl"))
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&0o111, "executable")
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	require.Len(t, b.String(), 8*100*2)
}
