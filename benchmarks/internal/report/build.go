package report

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// Build names a binary for a results file. This module's binaries print no
// version and carry "(devel)" as their module version: they are named by the
// VCS revision they were built from ("+dirty" for a modified tree) and the
// first 12 hex digits of their SHA-256, so that an A/B run says which two
// builds it compared. Other binaries get Version.
func Build(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil || bi.Main.Version != "(devel)" {
		return Version(path)
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	parts := []string{bi.Main.Path}
	if rev != "" {
		parts = append(parts, "rev "+rev[:min(12, len(rev))]+modified)
	}
	if sum, err := fileSHA256(path); err == nil {
		parts = append(parts, "sha256 "+sum[:12])
	}
	parts = append(parts, bi.GoVersion)
	return strings.Join(parts, ", ")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
