package testenv

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
)

// BuildCommands builds the module's commands (./cmd/<name> for each name)
// into dir, one `go build` from the module root, each binary named after its
// command.
func BuildCommands(dir string, cmds ...string) error {
	if len(cmds) == 0 {
		return nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, c := range cmds {
		args = append(args, "./cmd/"+c)
	}
	build := exec.Command("go", args...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v into %s: %w\n%s", cmds, dir, err, out)
	}
	return nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// command's stdout and stderr, or a logger, written while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
