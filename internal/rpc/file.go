package rpc

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"
)

// watchedFile caches a small file's content and re-reads it when a stat
// shows that it changed (another inode, size or modification time), so a
// rotated token or certificate takes effect on the next call without a
// restart. A stat costs about a microsecond, cheap enough for every call.
// When a re-read fails, the last good content stays in force.
type watchedFile struct {
	path string

	mu      sync.Mutex
	info    os.FileInfo
	content []byte
	loaded  bool
	// goodToken is the last non-empty token read (token files only).
	goodToken []byte
}

func newWatchedFile(path string) *watchedFile {
	return &watchedFile{path: path}
}

// get returns the file's content, re-read if it changed since the last call.
// changed reports a re-read; err is set when the file could not be read, in
// which case content is the last good content (nil if none).
func (f *watchedFile) get() (content []byte, changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := os.Stat(f.path)
	if err != nil {
		return f.content, false, fmt.Errorf("stat %q: %w", f.path, err)
	}
	if f.loaded && os.SameFile(info, f.info) && info.Size() == f.info.Size() && info.ModTime().Equal(f.info.ModTime()) {
		return f.content, false, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return f.content, false, fmt.Errorf("read %q: %w", f.path, err)
	}
	changed = !f.loaded || !bytes.Equal(b, f.content)
	f.info, f.content, f.loaded = info, b, true
	return f.content, changed, nil
}

// forget drops the cached stat so that the next get re-reads the file even
// if its stat looks unchanged (a rewrite within the file system's
// timestamp granularity, at the same size).
func (f *watchedFile) forget() {
	f.mu.Lock()
	f.info = zeroInfo{}
	f.mu.Unlock()
}

// zeroInfo is a FileInfo that matches no real file.
type zeroInfo struct{}

func (zeroInfo) Name() string       { return "" }
func (zeroInfo) Size() int64        { return -1 }
func (zeroInfo) Mode() os.FileMode  { return 0 }
func (zeroInfo) ModTime() time.Time { return time.Time{} }
func (zeroInfo) IsDir() bool        { return false }
func (zeroInfo) Sys() any           { return nil }

// token reads a bearer token file: surrounding white space is trimmed, and
// an empty token is an error (it would match an empty header). On an error
// (unreadable or empty file) tok is the last good token, nil if none.
func (f *watchedFile) token() (tok []byte, changed bool, err error) {
	b, changed, err := f.get()
	tok = bytes.TrimSpace(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(tok) == 0 {
		if err == nil {
			err = fmt.Errorf("token file %q is empty", f.path)
		}
		return f.goodToken, changed, err
	}
	f.goodToken = tok
	return tok, changed, err
}
