package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// errNoPprof: the scraper serves no /debug/pprof/.
var errNoPprof = errors.New("no /debug/pprof/ on the scraper (404)")

// fetchProfiles takes a CPU profile of d and then a heap profile from the
// scraper's /debug/pprof/ at web, into dir as
// <date>-<peer>-{cpu,heap}.pprof. The channel gets the outcome.
func fetchProfiles(ctx context.Context, web, dir, peer string, at time.Time, d time.Duration, logger *slog.Logger) <-chan error {
	out := make(chan error, 1)
	go func() {
		prefix := filepath.Join(dir, at.UTC().Format("2006-01-02")+"-"+peer)
		err := fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", web, int(d.Seconds())), prefix+"-cpu.pprof")
		if err == nil {
			err = fetch(ctx, "http://"+web+"/debug/pprof/heap", prefix+"-heap.pprof")
		}
		if err == nil {
			logger.Info("Profiles saved", "peer", peer, "cpu", prefix+"-cpu.pprof", "heap", prefix+"-heap.pprof")
		}
		out <- err
	}()
	return out
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNoPprof
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return f.Close()
}
